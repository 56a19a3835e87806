"""A deterministic corpus of realistic help-desk mail, shared by every benchmark in bench/.

API (keep it this small; other benchmarks import it)::

    from bench.corpus import generate, write_mbox, summary

    messages = generate(5000, seed=1)   # list[Message], identical for the same (n, seed)
    m = messages[0]
    m.raw          # bytes as on the wire: CRLF line endings, not dot-stuffed
    m.mail_from    # envelope sender (str)
    m.rcpt_tos     # envelope recipients (tuple[str, ...]), support@ or outage@example.com
    m.kind         # "new" | "reply" | "auto_reply"
    m.message_id   # the Message-ID header value, "<...>"
    m.shape        # "plain" | "alternative" | "html" (+ "+attachments")
    m.charset      # charset of the text parts
    write_mbox(messages, path)          # mbox (LF line endings, ">From " quoting)
    print(summary(messages))            # one-paragraph description of the mix

The mix (fractions are approximate, drawn from the seed):

- ~57 % new tickets, ~40 % replies, ~3 % auto-replies (``Auto-Submitted: auto-replied``).
  Ticket numbers are random at run time, so a reply threads through
  ``In-Reply-To``/``References`` to an earlier message of the same thread (at
  least 20 messages earlier, so it is normally committed before the reply
  arrives); about a fifth of the replies also carry a foreign ``[#NNNNNN]``
  subject tag, which must miss and fall through to ``In-Reply-To``.
- ~55 % text/plain, ~27 % multipart/alternative (text + Outlook-style HTML),
  ~8 % HTML only; ~13 % of all messages carry 1-3 attachments (PDF, PNG,
  JPEG, DOCX, CSV, log), 3 KB to ~200 KB each, some with RFC 2231 names.
- Charsets: utf-8 (~60 %, with emoji), iso-8859-1, windows-1252, koi8-r,
  iso-2022-jp, gb2312; transfer encodings quoted-printable, base64, 8bit,
  7bit; RFC 2047 subjects and display names; ~10 % paste a log of 1-25 KB;
  replies quote the previous message (``>`` or Outlook's "Original Message").
- ~5 % of new tickets are outages (subject keyword or outage@example.com) and
  ~5 % of senders are at bigbank.example (the demo's VIP rule).
"""

from __future__ import annotations

import base64
import quopri
import random
import textwrap
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.header import Header
from email.utils import format_datetime
from pathlib import Path
from statistics import median

__all__ = ["Message", "generate", "summary", "write_mbox"]

SUPPORT = "support@example.com"
OUTAGE = "outage@example.com"
_EPOCH = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Message:
    raw: bytes
    mail_from: str
    rcpt_tos: tuple[str, ...]
    kind: str
    message_id: str
    shape: str
    charset: str


# --------------------------------------------------------------------------- vocabulary
_EN = [
    "I cannot log in to the customer portal since this morning.",
    "The invoice for March shows the wrong VAT number.",
    "Our nightly export job failed again with a timeout after 30 minutes.",
    "Could you please reset the password for our shared account?",
    "The mobile app crashes as soon as I open the settings page.",
    "We were charged twice for the same subscription.",
    "Attached is the screenshot of the error message we get.",
    "The report generator produces empty PDF files for last quarter.",
    "Since the last update the sync between our CRM and your API stopped working.",
    "Please add two more seats to our team plan.",
    "Emails from your system land in our spam folder.",
    "The dashboard takes more than a minute to load for some users.",
    "Is there a way to export all tickets as CSV?",
    "We need the data processing agreement signed for our auditors.",
    "The webhook deliveries return HTTP 502 from your side.",
    "I followed the steps in the knowledge base article but nothing changed.",
    "This is blocking our month-end closing, so a quick answer would help.",
    "Our users in the Singapore office see a certificate warning.",
    "Can you confirm whether the maintenance window affects EU customers?",
    "The search does not find documents uploaded after Friday.",
    "We would like to upgrade to the enterprise plan from next month.",
    "Two-factor codes arrive several minutes late or not at all.",
    "The printer driver package from your download page is corrupt.",
    "Please cancel order 48213 and refund the payment.",
    "It worked fine until we changed the DNS records yesterday.",
    "Thanks for the quick reply, unfortunately the problem is still there.",
    "I tried again with a different browser and got the same result.",
    "Our IT department asks which IP ranges your service sends from.",
]
_DE = [
    "Seit heute früh können wir uns nicht mehr anmelden.",
    "Die Rechnung für März enthält eine falsche Umsatzsteuer-ID.",
    "Könnten Sie bitte das Passwort für unser Gemeinschaftskonto zurücksetzen?",
    "Der nächtliche Export schlägt mit einer Zeitüberschreitung fehl.",
    "Wir wurden für dasselbe Abonnement doppelt belastet.",
    "Die Synchronisation mit unserem CRM funktioniert seit dem Update nicht mehr.",
    "Bitte fügen Sie unserem Team zwei weitere Lizenzen hinzu.",
    "Grüße aus Köln, und vielen Dank für die schnelle Hilfe.",
    "Das Problem tritt nur bei Benutzern mit Umlauten im Namen auf (Jürgen, Bärbel).",
]
_FR = [
    "Je ne parviens plus à me connecter au portail depuis ce matin.",
    "La facture de mars indique un numéro de TVA erroné.",
    "Pourriez-vous réinitialiser le mot de passe de notre compte partagé ?",
    "L'export nocturne échoue à nouveau après trente minutes.",
    "Nous avons été débités deux fois pour le même abonnement.",
    "Merci de votre réponse rapide, mais le problème persiste.",
]
_ES = [
    "No puedo iniciar sesión en el portal desde esta mañana.",
    "La factura de marzo muestra un número de IVA incorrecto.",
    "¿Podrían restablecer la contraseña de nuestra cuenta compartida?",
    "Nos cobraron dos veces la misma suscripción.",
    "Gracias por la respuesta rápida; el problema continúa.",
]
_CP1252_EXTRA = [
    "Der Betrag von 49,90 € wurde zweimal abgebucht – bitte prüfen.",
    "Le message d’erreur dit « accès refusé » — c’est bloquant pour l’équipe.",
    "Our manager said “it’s urgent” – could you escalate?",
]
_RU = [
    "С сегодняшнего утра я не могу войти в личный кабинет.",
    "В счёте за март указан неверный ИНН.",
    "Пожалуйста, сбросьте пароль для нашей общей учётной записи.",
    "Ночная выгрузка снова завершилась с ошибкой по таймауту.",
    "С нас дважды списали оплату за одну и ту же подписку.",
    "Спасибо за быстрый ответ, но проблема осталась.",
]
_JA = [
    "今朝からポータルにログインできません。",
    "三月分の請求書の登録番号が間違っています。",
    "共有アカウントのパスワードを再設定していただけますか。",
    "夜間のエクスポート処理がタイムアウトで失敗しました。",
    "同じ契約で二重に請求されています。",
    "早速のご回答ありがとうございます。しかし問題は解決していません。",
]
_ZH = [
    "从今天早上开始我无法登录客户门户。",
    "三月份的发票上税号不正确。",
    "请帮我们重置共享账户的密码。",
    "夜间导出任务再次因超时而失败。",
    "同一个订阅被扣了两次费用。",
    "谢谢您的快速回复，但是问题仍然存在。",
]
_EMOJI = [" 🙏", " 😞", " 🔥", " 👍", " ⚠️"]
_SUBJECTS = {
    "en": ["Cannot log in", "Wrong VAT number on invoice", "Export job fails", "Password reset please",
           "App crashes on settings page", "Charged twice", "Empty PDF reports", "API sync stopped",
           "Two more seats", "Your mails go to spam", "Slow dashboard", "CSV export of tickets?",
           "DPA signature needed", "Webhook 502 errors", "Certificate warning in Singapore",
           "Search misses new documents", "Upgrade to enterprise", "2FA codes late", "Refund order 48213"],
    "de": ["Anmeldung nicht möglich", "Falsche USt-ID auf der Rechnung", "Export schlägt fehl",
           "Doppelte Abbuchung", "Zusätzliche Lizenzen für unser Büro"],
    "fr": ["Connexion impossible", "Numéro de TVA erroné", "Double prélèvement", "Réinitialisation du mot de passe"],
    "es": ["No puedo iniciar sesión", "Factura con IVA incorrecto", "Cobro duplicado", "Contraseña olvidada"],
    "ru": ["Не могу войти", "Ошибка в счёте", "Двойное списание", "Сброс пароля"],
    "ja": ["ログインできません", "請求書の誤り", "二重請求について", "パスワード再設定のお願い"],
    "zh": ["无法登录", "发票税号错误", "重复扣费", "请重置密码"],
}
_OUTAGE_SUBJECTS = ["Production outage: API returns 500 errors", "URGENT: portal is down for all users",
                    "Outage in EU region since 09:10", "Checkout is down"]
_FIRST = ["Anna", "Ben", "Carla", "David", "Emma", "Felix", "Grace", "Hiro", "Ines", "Jonas", "Kofi", "Lena",
          "Marco", "Nina", "Omar", "Paula", "Quentin", "Rosa", "Sven", "Tara", "Umar", "Vera", "Wei", "Yuki"]
_FIRST_ACCENT = ["Jürgen", "Zoë", "François", "Bärbel", "José", "Åsa", "Søren", "Małgorzata", "Ştefan", "Björk"]
_LAST = ["Smith", "Meyer", "Rossi", "Dubois", "Garcia", "Tanaka", "Novak", "Okafor", "Larsen", "Chen", "Silva",
         "Kowalski", "Schulz", "Nakamura", "Brown", "Jansen", "Petrov", "Moreau", "Lopez", "Fischer"]
_LAST_ACCENT = ["Müller", "Lefèvre", "Núñez", "Sørensen", "Wójcik", "Çelik", "Håkansson", "Dvořák"]
_DOMAINS = ["acme.example", "globex.example", "initech.example", "umbrella.example", "hooli.example",
            "stark.example", "wayne.example", "tyrell.example", "mail.example.de", "post.example.jp",
            "example.org", "example.net", "soylent.example", "cyberdyne.example", "oscorp.example"]
_VIP = "bigbank.example"
_MAILERS = [
    ("X-Mailer", "Microsoft Outlook 16.0"),
    ("User-Agent", "Mozilla Thunderbird 128.3.1"),
    ("X-Mailer", "Apple Mail (2.3774.600.62)"),
    ("User-Agent", "Roundcube Webmail/1.6.9"),
    ("X-Mailer", "iPhone Mail (21G93)"),
    ("User-Agent", "Mutt/2.2.13 (2024-03-09)"),
]
_REPLY_PREFIX = ["Re: ", "RE: ", "AW: ", "Re: [EXT] ", "Re: Re: ", "SV: ", "R: "]
_ATTACHMENTS = [
    ("application/pdf", "invoice-{n}.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"),
    ("image/png", "screenshot-{n}.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
    ("image/jpeg", "photo_{n}.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"),
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "Anfrage Nr. {n} – Übersicht.docx",
     b"PK\x03\x04\x14\x00\x06\x00"),
    ("text/csv", "export-{n}.csv", b""),
    ("text/plain", "server-{n}.log", b""),
]


@dataclass
class _Thread:
    subject: str
    requester: tuple[str, str]  # (display name, address)
    cc: tuple[str, str] | None
    rcpt: str
    ids: list[str]  # Message-IDs of the thread so far
    last_text: str
    last_date: datetime


# --------------------------------------------------------------------------- small helpers
def _charset_and_lang(rng: random.Random) -> tuple[str, str]:
    charset = rng.choices(["utf-8", "iso-8859-1", "windows-1252", "koi8-r", "iso-2022-jp", "gb2312"],
                          [60, 14, 10, 6, 5, 5])[0]
    if charset == "utf-8":
        lang = rng.choices(["en", "de", "fr", "es", "ru", "ja", "zh"], [60, 12, 8, 5, 5, 5, 5])[0]
    elif charset in ("iso-8859-1", "windows-1252"):
        lang = rng.choice(["en", "de", "fr", "es"])
    else:
        lang = {"koi8-r": "ru", "iso-2022-jp": "ja", "gb2312": "zh"}[charset]
    return charset, lang


def _sentences(lang: str, charset: str) -> list[str]:
    bank = {"en": _EN, "de": _DE, "fr": _FR, "es": _ES, "ru": _RU, "ja": _JA, "zh": _ZH}[lang]
    if charset == "windows-1252" and lang != "es":
        return bank + _CP1252_EXTRA[:2] if lang in ("de", "fr") else bank + _CP1252_EXTRA[2:]
    return bank


def _person(rng: random.Random, vip: bool = False) -> tuple[str, str]:
    first = rng.choice(_FIRST_ACCENT) if rng.random() < 0.15 else rng.choice(_FIRST)
    last = rng.choice(_LAST_ACCENT) if rng.random() < 0.15 else rng.choice(_LAST)
    domain = _VIP if vip else rng.choice(_DOMAINS)
    local = f"{first[0]}.{last}".lower().encode("ascii", "ignore").decode() or "user"
    return f"{first} {last}", f"{local}{rng.randint(1, 400)}@{domain}"


def _header_text(value: str, charset: str) -> str:
    """An unstructured header value, RFC 2047-encoded when it is not ASCII."""
    if value.isascii():
        return value
    encoding = charset if _fits(value, charset) else "utf-8"
    return Header(value, encoding).encode(maxlinelen=76)


def _fits(text: str, charset: str) -> bool:
    try:
        text.encode(charset)
    except UnicodeEncodeError:
        return False
    return True


def _address(name: str, addr: str, charset: str) -> str:
    if name.isascii():
        return f'"{name}" <{addr}>' if "," in name else f"{name} <{addr}>"
    return f"{_header_text(name, charset)} <{addr}>"


def _date(when: datetime, rng: random.Random) -> str:
    tz = timezone(timedelta(hours=rng.choice([-7, -5, 0, 1, 2, 3, 8, 9])))
    return format_datetime(when.astimezone(tz))


def _paragraphs(rng: random.Random, lang: str, charset: str, count: int) -> str:
    bank = _sentences(lang, charset)
    paras = []
    for _ in range(count):
        text = " ".join(rng.choice(bank) for _ in range(rng.randint(1, 5)))
        if charset == "utf-8" and rng.random() < 0.2:
            text += rng.choice(_EMOJI)
        width = 36 if lang in ("ja", "zh") else 72
        paras.append(textwrap.fill(text, width=width))
    return "\n\n".join(paras)


def _log_paste(rng: random.Random, size: int) -> str:
    lines, total, t = [], 0, _EPOCH
    levels = ["INFO", "INFO", "INFO", "WARN", "ERROR", "DEBUG"]
    while total < size:
        t += timedelta(milliseconds=rng.randint(1, 4000))
        line = (f"{t:%Y-%m-%d %H:%M:%S},{rng.randint(0, 999):03d} {rng.choice(levels):5} "
                f"[worker-{rng.randint(1, 16)}] sync.job id={rng.getrandbits(32):08x} "
                f"took={rng.randint(1, 30000)}ms status={rng.choice([200, 200, 204, 500, 502, 504])}")
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)


def _signature(name: str, rng: random.Random) -> str:
    return f"-- \n{name}\n{rng.choice(['IT Operations', 'Accounts Payable', 'Head of Sales', 'Office'])}\n" \
           f"Phone +49 30 {rng.randint(1000000, 9999999)}"


# --------------------------------------------------------------------------- bodies
def _plain_body(rng: random.Random, lang: str, charset: str, name: str, thread: _Thread | None) -> str:
    greetings = {"de": "Hallo,", "fr": "Bonjour,", "es": "Hola,", "ru": "Здравствуйте!",
                 "ja": "お世話になっております。", "zh": "您好，"}
    greeting = greetings.get(lang, rng.choice(["Hello,", "Hi team,", "Dear Support,"]))
    parts = [greeting, _paragraphs(rng, lang, charset, rng.randint(1, 4) if thread is None else rng.randint(1, 2))]
    if rng.random() < 0.10:
        parts.append("Here is the relevant part of the log:\n\n" + _log_paste(rng, int(rng.uniform(1, 25) * 1024)))
    parts.append(_signature(name, rng))
    text = "\n\n".join(parts)
    if thread is not None:
        text += "\n\n" + _quote(rng, thread)
    return text


def _quote(rng: random.Random, thread: _Thread) -> str:
    old = thread.last_text.splitlines()[:60]
    name, addr = thread.requester
    if rng.random() < 0.3:
        head = (f"-----Original Message-----\nFrom: {name} <{addr}>\nSent: {format_datetime(thread.last_date)}\n"
                f"To: {thread.rcpt}\nSubject: {thread.subject}\n\n")
        return head + "\n".join(old)
    return f"On {format_datetime(thread.last_date)}, {name} <{addr}> wrote:\n" + "\n".join(
        f"> {line}" if line else ">" for line in old)


def _html_from_text(text: str, rng: random.Random) -> str:
    from html import escape

    paras = "".join(
        f'<p class="MsoNormal" style="margin:0cm;font-size:11pt;font-family:Calibri,sans-serif">'
        f"{escape(p).replace(chr(10), '<br>' + chr(10))}</p>\n" for p in text.split("\n\n"))
    tracker = f'<img src="https://track.example/{rng.getrandbits(64):x}.gif" width="1" height="1">'
    return ("<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">"
            "<style>p.MsoNormal{margin:0cm;font-size:11pt}</style></head>\n"
            f'<body lang="EN-US" link="#0563C1"><div class="WordSection1">\n{paras}'
            f"<table><tr><td><b>Confidential</b></td><td>This e-mail may contain confidential information.</td>"
            f"</tr></table>{tracker}</div></body></html>")


def _encode_text(text: str, subtype: str, charset: str, rng: random.Random) -> str:
    """One text/* MIME part (headers + encoded body), LF line endings."""
    data = text.encode(charset)
    if charset == "iso-2022-jp":
        cte, body = "7bit", data.decode("ascii")
    elif charset == "gb2312" or rng.random() < 0.2:
        cte, body = "base64", base64.encodebytes(data).decode("ascii")
    elif data.isascii():
        cte, body = "7bit", text
    elif rng.random() < 0.6:
        cte, body = "quoted-printable", quopri.encodestring(data).decode("ascii")
    else:  # raw bytes carried through str as latin-1, encoded back byte for byte
        cte, body = "8bit", data.decode("latin-1")
    head = f'Content-Type: text/{subtype}; charset="{charset}"\nContent-Transfer-Encoding: {cte}\n\n'
    return head + body.rstrip("\n") + "\n"


def _attachment(rng: random.Random, index: int) -> str:
    ctype, pattern, magic = rng.choice(_ATTACHMENTS)
    size = int(3 * 1024 * (200 / 3) ** rng.random())  # log-uniform 3 KB .. 200 KB
    name = pattern.format(n=index)
    if ctype.startswith("text/"):
        data = (_log_paste(rng, size) if ctype == "text/plain" else _csv(rng, size)).encode()
    else:
        data = magic + rng.randbytes(size)
    if name.isascii():
        disp = f'attachment; filename="{name}"'
    else:
        from urllib.parse import quote

        disp = f"attachment; filename*=utf-8''{quote(name)}"
    return (f'Content-Type: {ctype}; name="{_header_text(name, "utf-8")}"\n'
            f"Content-Disposition: {disp}\nContent-Transfer-Encoding: base64\n\n"
            + base64.encodebytes(data).decode("ascii"))


def _csv(rng: random.Random, size: int) -> str:
    rows, total = ["date;customer;amount;currency;status"], 0
    while total < size:
        row = f"2026-02-{rng.randint(1, 28):02d};C{rng.randint(1000, 9999)};{rng.uniform(1, 5000):.2f};EUR;" \
              f"{rng.choice(['paid', 'open', 'overdue'])}"
        rows.append(row)
        total += len(row) + 1
    return "\n".join(rows)


def _multipart(subtype: str, parts: list[str], boundary: str) -> str:
    body = "".join(f"--{boundary}\n{p}" for p in parts)
    return f'Content-Type: multipart/{subtype};\n\tboundary="{boundary}"\n\n' \
           f"This is a multi-part message in MIME format.\n\n{body}--{boundary}--\n"


def _mime_body(rng: random.Random, text: str, charset: str, index: int) -> tuple[str, str]:
    """(Content-* headers + body, shape) for a message with this text."""
    roll = rng.random()
    html_charset = "utf-8" if rng.random() < 0.7 else charset
    if roll < 0.08:
        shape, body = "html", _encode_text(_html_from_text(text, rng), "html", html_charset, rng)
    elif roll < 0.35:
        shape = "alternative"
        body = _multipart("alternative", [_encode_text(text, "plain", charset, rng),
                                          _encode_text(_html_from_text(text, rng), "html", html_charset, rng)],
                          f"----=_NextPart_{rng.getrandbits(48):012X}")
    else:
        shape, body = "plain", _encode_text(text, "plain", charset, rng)
    if rng.random() < 0.13:
        attachments = [_attachment(rng, index * 10 + k) for k in range(rng.choices([1, 2, 3], [75, 18, 7])[0])]
        body = _multipart("mixed", [body, *attachments], f"_boundary_mixed_{rng.getrandbits(64):016x}")
        shape += "+attachments"
    return body, shape


# --------------------------------------------------------------------------- messages
def _new_thread(rng: random.Random, lang: str, charset: str, when: datetime) -> _Thread:
    vip = rng.random() < 0.05
    requester = _person(rng, vip)
    outage = rng.random() < 0.05
    if outage:
        subject = rng.choice(_OUTAGE_SUBJECTS)
    else:
        subject = rng.choice(_SUBJECTS[lang] if rng.random() < 0.8 else _SUBJECTS["en"])
        subject += rng.choice(["", "", f" ({rng.randint(100, 99999)})", " - please help", "?"])
    cc = _person(rng) if rng.random() < 0.15 else None
    rcpt = OUTAGE if outage and rng.random() < 0.5 else SUPPORT
    return _Thread(subject, requester, cc, rcpt, [], "", when)


def _headers(rng: random.Random, thread: _Thread, sender: tuple[str, str], subject: str, charset: str,
             when: datetime, message_id: str) -> list[str]:
    name, addr = sender
    relay = f"mx{rng.randint(1, 4)}.{addr.rpartition('@')[2]}"
    lines = [
        f"Received: from {relay} ({relay} [192.0.2.{rng.randint(1, 254)}])\n\tby mx.example.com (Postfix)"
        f" with ESMTPS id {rng.getrandbits(40):010X}\n\tfor <{thread.rcpt}>; {format_datetime(when)}",
        f"From: {_address(name, addr, charset)}",
        f"To: {'Example Support' if rng.random() < 0.5 else 'Support'} <{thread.rcpt}>",
    ]
    if thread.cc is not None and sender != thread.cc:
        lines.append(f"Cc: {_address(*thread.cc, charset)}")
    lines += [f"Subject: {_header_text(subject, charset)}", f"Date: {_date(when, rng)}",
              f"Message-ID: {message_id}", "MIME-Version: 1.0", ": ".join(rng.choice(_MAILERS))]
    if thread.ids:
        lines.append(f"In-Reply-To: {thread.ids[-1]}")
        lines.append("References: " + "\n ".join(thread.ids[-10:]))
    return lines


def _reply_to(rng: random.Random, i: int, threads: list[_Thread]) -> tuple[_Thread | None, str]:
    roll = rng.random()
    if i < 20 or roll >= 0.43 or len(threads) < 20:
        return None, "new"
    thread = threads[rng.randint(max(0, len(threads) - 1500), len(threads) - 20)]
    return thread, "auto_reply" if roll < 0.03 else "reply"


def _one(rng: random.Random, i: int, threads: list[_Thread]) -> tuple[Message, _Thread]:
    when = _EPOCH + timedelta(seconds=17 * i + rng.randint(0, 16))
    thread, kind = _reply_to(rng, i, threads)
    charset, lang = _charset_and_lang(rng)
    if thread is None:
        thread = _new_thread(rng, lang, charset, when)
        subject, sender = thread.subject, thread.requester
    elif kind == "auto_reply":
        subject, sender = f"Automatic reply: {thread.subject}", thread.requester
        charset, lang = "utf-8", "en"
    else:
        tag = f"[#{rng.randint(100000, 999999)}] " if rng.random() < 0.2 else ""
        subject = rng.choice(_REPLY_PREFIX) + tag + thread.subject
        sender = thread.cc if thread.cc is not None and rng.random() < 0.2 else thread.requester
    if kind == "auto_reply":
        text = "I am out of the office until Monday with limited access to e-mail.\n\nRegards"
    else:
        text = _plain_body(rng, lang, charset, sender[0], thread if thread.ids else None)
    if not _fits(subject + sender[0] + text, charset):  # a quote or a name from another script
        charset = "utf-8"
    domain = sender[1].rpartition("@")[2]
    message_id = f"<{rng.getrandbits(80):020x}.{i}@{domain}>"
    body, shape = _mime_body(rng, text, charset, i)
    head = _headers(rng, thread, sender, subject, charset, when, message_id)
    if kind == "auto_reply":
        head += ["Auto-Submitted: auto-replied", "X-Auto-Response-Suppress: All"]
    raw = ("\n".join(head) + "\n" + body).encode("latin-1")  # headers are ASCII, 8bit bodies latin-1-mapped
    thread.ids.append(message_id)
    thread.last_text, thread.last_date = text, when
    return Message(raw.replace(b"\n", b"\r\n"), sender[1], (thread.rcpt,), kind, message_id, shape, charset), thread


def generate(n: int, seed: int = 1) -> list[Message]:
    """``n`` messages in arrival order; the same (n, seed) always gives the same bytes."""
    rng = random.Random(seed)
    threads: list[_Thread] = []
    out = []
    for i in range(n):
        msg, thread = _one(rng, i, threads)
        if msg.kind == "new":
            threads.append(thread)
        out.append(msg)
    return out


def write_mbox(messages: list[Message], path: Path | str) -> None:
    """An mbox (mboxo: ``>From `` quoting, LF endings) with a deterministic From_ line per message."""
    with open(path, "wb") as fh:
        for i, m in enumerate(messages):
            when = (_EPOCH + timedelta(seconds=17 * i)).strftime("%a %b %d %H:%M:%S %Y")
            body = m.raw.replace(b"\r\n", b"\n")
            body = body.replace(b"\nFrom ", b"\n>From ")
            fh.write(f"From {m.mail_from or 'MAILER-DAEMON'} {when}\n".encode() + body.rstrip(b"\n") + b"\n\n")


def summary(messages: list[Message]) -> str:
    sizes = sorted(len(m.raw) for m in messages)
    kinds = Counter(m.kind for m in messages)
    shapes = Counter(m.shape for m in messages)
    charsets = Counter(m.charset for m in messages)
    with_att = sum(1 for m in messages if "attachments" in m.shape)
    return (f"{len(messages)} messages, {sum(sizes) / 1e6:.1f} MB; kinds {dict(kinds)}; "
            f"with attachments {with_att}; shapes {dict(shapes.most_common())}; "
            f"charsets {dict(charsets.most_common())}; "
            f"size p50 {median(sizes) / 1024:.1f} KB, max {sizes[-1] / 1024:.0f} KB")
