"""From an API request to a channel ``Entry``: who writes, as whom, and what the key may ask for.

A key with the ``agent`` scope is staff: it opens tickets as a phone call (or another staff channel)
entered by its agent, and writes on tickets as that agent. The agent is the key's own (a personal key)
or, for a key shared by a system staff use (a phone system), the agent each request names. Any other
key is a customer's channel: asking for what only staff may (``agent``, ``channel``, ``ack``, ``note``)
is 403 and says so, rather than being ignored, so a client never believes it did something it did not.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailgate.intake import channel
from mailgate.pipeline.ingest import Context
from mailgate.pipeline.submission import Submission
from mailgate.web.api_models import NewMessage, NewTicket, PersonIn
from mailgate.web.bodies import field_problem
from mailgate.web.keys import Caller
from mailgate.web.problems import Problem


def someone(given: str | PersonIn, field: str) -> channel.Person:
    try:
        if isinstance(given, str):
            return channel.person(given, field)
        address = channel.person(given.email, f"{field}.email").email
        name = given.name.replace("\\", "\\\\").replace('"', '\\"')
        return channel.Person(address, channel.person(f'"{name}" <{address}>', field).name)
    except channel.Invalid as exc:
        raise field_problem(exc.field, exc.message) from None


def _staff_only(who: Caller, asked: Sequence[str]) -> None:
    if asked and not who.is_agent:
        raise Problem(403, "agent-only",
                      f"{', '.join(asked)}: only a key with the agent scope may set this; the key {who.name} "
                      f"has {', '.join(sorted(who.scopes))}",
                      errors=[{"field": name, "message": "needs a key with the agent scope"} for name in asked])


def _agent(named: str | None, who: Caller) -> str:
    """The agent the key writes as: its own, else the one the request names (required then)."""
    if who.agent is not None:
        if named is not None and someone(named, "agent").email != who.agent:
            raise Problem(403, "agent-only", f"agent: the key {who.name} writes as {who.agent} only",
                          errors=[{"field": "agent", "message": f"this key writes as {who.agent} only"}])
        return who.agent
    if named is None:
        raise field_problem("agent", f"required: the key {who.name} has no agent of its own")
    return someone(named, "agent").email


def _no_tag(subject: str, ctx: Context) -> str:
    """A new ticket's subject may not name a ticket: the pipeline would thread the mail onto it, and a
    message for a ticket goes to its own endpoint, where only its participants may write."""
    named = ctx.tag.numbers_in(subject) or [n for _, n in ctx.tag.foreign_numbers(subject)]
    if named:
        raise field_problem("subject", f"names ticket {named[0]}; to write on a ticket, "
                                       f"POST /api/v1/tickets/{named[0]}/messages")
    return subject


def ticket_entry(given: NewTicket, uploads: tuple[channel.Upload, ...], who: Caller, ctx: Context,
                 key: str | None) -> channel.Entry:
    _staff_only(who, [name for name in ("channel", "agent", "ack") if getattr(given, name) is not None])
    requester = someone(given.requester, "requester")
    try:
        subject = _no_tag(channel.subject(given.subject, True), ctx)
        text = channel.body(given.body)
        fields = channel.fields(dict(given.fields or {}))
    except channel.Invalid as exc:
        raise field_problem(exc.field, exc.message) from None
    priority = given.priority.value if given.priority is not None else None
    if who.is_agent:
        sub = Submission(channel=given.channel or "phone", client=who.name, agent=_agent(given.agent, who),
                         priority=priority, help_topic=given.help_topic, fields=fields, ack=given.ack is not False,
                         idempotent=key is not None)
    else:
        sub = Submission(channel="api", client=who.name, priority=priority, help_topic=given.help_topic,
                         fields=fields, idempotent=key is not None)
    return channel.Entry(requester, text, sub, subject, uploads, key)


def message_entry(number: str, given: NewMessage, uploads: tuple[channel.Upload, ...], who: Caller, ctx: Context,
                  key: str | None) -> channel.Entry:
    asked = [name for name in ("note", "agent") if getattr(given, name) is not None]
    _staff_only(who, asked)
    try:
        text = channel.body(given.body)
    except channel.Invalid as exc:
        raise field_problem(exc.field, exc.message) from None
    if given.from_ is not None:  # the customer writing (the pipeline checks they take part in the ticket)
        if asked:
            raise field_problem(asked[0], "an agent's message has no 'from'; leave one of them out")
        sub = Submission(channel="api", client=who.name, ticket=number, idempotent=key is not None)
        return channel.Entry(someone(given.from_, "from"), text, sub, attachments=uploads, idempotency_key=key)
    if not who.is_agent:
        raise field_problem("from", "required: the customer who writes (the requester or a collaborator)")
    agent = _agent(given.agent, who)
    sub = Submission(channel="api", client=who.name, ticket=number, agent=agent, note=bool(given.note),
                     idempotent=key is not None)
    author = channel.Person(agent, ctx.directory.names.get(agent, ""))
    return channel.Entry(author, text, sub, attachments=uploads, idempotency_key=key)
