"""Load mailgate.yaml and the files it names into one checked ``Config``.

Every problem is reported at once as ``file:line: message``; paths are resolved relative to the file
that names them, so a config directory can be moved as a whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ValidationError,
)

from mailgate.config.check import CrossCheck, in_file_order, partial_rules
from mailgate.config.models import Config, Database, MainFile
from mailgate.config.side_files import AgentsFile, SlaFile
from mailgate.errors import ConfigError
from mailgate.paths import resolve, sqlite_url
from mailgate.rules.schema import RulesFile
from mailgate.yamlfile import YamlDoc, load_yaml, raise_if, validation_problems


def packaged(folder: str, marker: str) -> Path:
    """A folder shipped with mailgate: the checkout's ``folder/`` or the copy inside the wheel."""
    package = Path(__file__).resolve().parent.parent  # mailgate/
    for candidate in (package.parent / folder, package / "_data" / folder):
        if (candidate / marker).exists():
            return candidate
    raise ConfigError(f"{package}:1: mailgate's {folder} folder is missing (broken install?)")


def default_templates() -> Path:
    """The shipped templates."""
    return packaged("templates", "ack_new.txt.j2")


def _validate(doc: YamlDoc, model: type[BaseModel], problems: list[str]) -> Any:
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        problems.extend(validation_problems(doc, exc))
        return None


def _load_side(path: Path | None, model: type[BaseModel], problems: list[str]) -> tuple[Any, YamlDoc | None]:
    if path is None:
        return model(), None
    try:
        doc = load_yaml(path)
    except ConfigError as exc:
        problems.extend(exc.problems)
        return None, None
    return _validate(doc, model, problems), doc


def _resolve_main(base: Path, main: MainFile) -> MainFile:
    state_dir = resolve(base, main.state_dir)
    assert state_dir is not None
    db = main.database or Database(url=f"sqlite:///{state_dir / 'mailgate.db'}")
    out = main.outbound
    mailboxes = [
        mb.model_copy(
            update={
                "password_file": resolve(base, mb.password_file),
                "oauth2_token_file": resolve(base, mb.oauth2_token_file),
                "cafile": resolve(base, mb.cafile),
            }
        )
        for mb in main.intake.imap
    ]
    return main.model_copy(
        update={
            "state_dir": state_dir,
            "database": db.model_copy(update={"url": sqlite_url(base, db.url)}),
            "rules": resolve(base, main.rules),
            "agents": resolve(base, main.agents),
            "sla": resolve(base, main.sla),
            "templates": resolve(base, main.templates) or default_templates(),
            "intake": main.intake.model_copy(update={"imap": mailboxes}),
            "outbound": out.model_copy(
                update={
                    "maildir": resolve(base, out.maildir) or state_dir / "outgoing",
                    "dkim": out.dkim.model_copy(update={"private_key_file": resolve(base, out.dkim.private_key_file)})
                    if out.dkim
                    else None,
                    "smtp": out.smtp.model_copy(update={"password_file": resolve(base, out.smtp.password_file)}),
                }
            ),
            "security": main.security.model_copy(update={"secret_file": resolve(base, main.security.secret_file)}),
        }
    )


def load_database_url(path: Path | str) -> str:
    """Only mailgate.yaml's database, so read-only commands work while another file is being fixed."""
    path = Path(path).resolve()
    problems: list[str] = []
    main = _validate(load_yaml(path), MainFile, problems)
    if main is None:
        raise ConfigError(problems)
    database = _resolve_main(path.parent, main).database
    assert database is not None  # _resolve_main fills in the default
    return database.url


def load_config(path: Path | str) -> Config:
    path = Path(path).resolve()
    problems: list[str] = []
    doc = load_yaml(path)
    main = _validate(doc, MainFile, problems)
    if main is None:
        raise ConfigError(problems)
    main = _resolve_main(path.parent, main)
    rules, rules_doc = _load_side(main.rules, RulesFile, problems)
    agents, agents_doc = _load_side(main.agents, AgentsFile, problems)
    sla, sla_doc = _load_side(main.sla, SlaFile, problems)
    docs = {"main": doc, "rules": rules_doc, "agents": agents_doc, "sla": sla_doc}
    if rules is None and rules_doc is not None and agents is not None and sla is not None:
        # rules.yaml has errors: still cross-check its valid parts, so check-config says everything at once
        partial, positions = partial_rules(rules_doc)
        config = Config(path=path, main=main, rules=partial, agents=agents, sla=sla)
        problems.extend(CrossCheck(config, docs, positions).run())
    raise_if(in_file_order(problems))
    config = Config(path=path, main=main, rules=rules, agents=agents, sla=sla)
    checker = CrossCheck(config, docs)
    problems.extend(checker.run())
    raise_if(in_file_order(problems))
    return config.model_copy(update={"rules": checker.bound_rules})  # list files read, schedules parsed
