"""Reading a relay's spam verdict and DMARC result from real-world headers, and believing only the relay's.

The samples are the shapes SpamAssassin (through amavis), rspamd, Gmail and Microsoft 365 write, with
their order in the header kept: what counts is who wrote a field, and that is read from where it stands.
"""

from __future__ import annotations

import ipaddress
from email import message_from_bytes, policy

import pytest

from mailgate.pipeline.mtaverdict import (
    read_dmarc,
    read_spam,
    read_verdict,
    received_from_ip,
    relays_part,
)

RELAYS = [ipaddress.ip_network("192.0.2.0/24")]


def _headers(text: str) -> list[tuple[str, str]]:
    msg = message_from_bytes(text.replace("\n", "\r\n").encode(), policy=policy.compat32)
    return [(k, str(v)) for k, v in msg.raw_items()]


# Postfix on mx1 (192.0.2.25) takes the mail from the Internet, amavis runs SpamAssassin and hands it
# back on loopback; mx1 relays it to mailgate. The sender wrote its own "X-Spam-Flag: NO" beneath.
SPAMASSASSIN = """\
Received: from localhost (localhost [127.0.0.1])
\tby mx1.example.com (Postfix) with ESMTP id 4F2A81C0042
\tfor <support@example.com>; Mon,  2 Mar 2026 10:00:04 +0100 (CET)
X-Virus-Scanned: amavisd-new at example.com
X-Spam-Flag: YES
X-Spam-Score: 7.112
X-Spam-Level: *******
X-Spam-Status: Yes, score=7.112 tagged_above=-999 required=5
\ttests=[BAYES_99=3.5, HTML_MESSAGE=0.001, RDNS_NONE=1.274, URIBL_BLOCKED=0.001,
\tSPF_HELO_NONE=0.001] autolearn=no autolearn_force=no
Received: from mx1.example.com ([127.0.0.1])
\tby localhost (mx1.example.com [127.0.0.1]) (amavisd-new, port 10024)
\twith ESMTP id Xq3bT0lQ9Hc5 for <support@example.com>;
\tMon,  2 Mar 2026 10:00:03 +0100 (CET)
Received: from bulk.spammer.example (unknown [203.0.113.66])
\tby mx1.example.com (Postfix) with ESMTP id 4F2A81C0042
\tfor <support@example.com>; Mon,  2 Mar 2026 10:00:02 +0100 (CET)
X-Spam-Flag: NO
X-Spam-Status: No, score=-10.0 required=5.0
Authentication-Results: mx1.example.com; dmarc=pass header.from=spammer.example
From: Winner <win@spammer.example>
To: support@example.com
Subject: You won

Click.
"""

# rspamd as a Postfix milter on mx1 (its fields above the relay's own Received by configuration)
RSPAMD = """\
X-Spamd-Result: default: True [11.40 / 15.00];
\tBAYES_SPAM(5.10)[99.99%]; R_DKIM_REJECT(1.00)[spammer.example:s=sel];
\tMID_RHS_NOT_FQDN(0.50)[]; ASN(0.00)[asn:64496, ipnet:203.0.113.0/24, country:ZZ]
X-Rspamd-Action: add header
X-Rspamd-Score: 11.40
X-Rspamd-Server: mx1
X-Spam: Yes
Received: from bulk.spammer.example (unknown [203.0.113.66])
\tby mx1.example.com (Postfix) with ESMTPS id 4Qx9Yz2Lm5z9sKL
\tfor <support@example.com>; Mon,  2 Mar 2026 10:00:02 +0100 (CET)
From: win@spammer.example
Subject: offer

Buy.
"""

# Gmail delivering into a mailbox read over IMAP: Authentication-Results stands *below* Gmail's
# entry Received, so only its authserv-id (mx.google.com) makes it Gmail's.
GMAIL = """\
Delivered-To: support@example.com
Received: by 2002:a05:7300:5b8c:b0:10e:85d:7b0 with SMTP id x12csp1802961dyf;
        Mon, 2 Mar 2026 01:00:05 -0800 (PST)
X-Google-Smtp-Source: AGHT+IF0cR2kdn4DvHZ3Lq0hQ9fM2s5
ARC-Seal: i=1; a=rsa-sha256; t=1772442005; cv=none; d=google.com; s=arc-20160816; b=Zm9v
ARC-Authentication-Results: i=1; mx.google.com;
       dkim=pass header.i=@customer.example header.s=s1 header.b=AbCd;
       spf=pass (google.com: domain of pat@customer.example designates 198.51.100.7 as permitted sender)
 smtp.mailfrom=pat@customer.example;
       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=customer.example
Return-Path: <pat@customer.example>
Received: from mail.customer.example (mail.customer.example. [198.51.100.7])
        by mx.google.com with ESMTPS id a640c23a62f3a-a9d7f1b2c3dsi123456766b.512.2026.03.02.01.00.04
        for <support@example.com>
        (version=TLS1_3 cipher=TLS_AES_256_GCM_SHA384 bits=256/256);
        Mon, 02 Mar 2026 01:00:05 -0800 (PST)
Received-SPF: pass (google.com: domain of pat@customer.example designates 198.51.100.7 as permitted sender)
 client-ip=198.51.100.7;
Authentication-Results: mx.google.com;
       dkim=pass header.i=@customer.example header.s=s1 header.b=AbCd;
       spf=pass (google.com: domain of pat@customer.example designates 198.51.100.7 as permitted sender)
 smtp.mailfrom=pat@customer.example;
       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=customer.example
Authentication-Results: mx.google.com; dmarc=fail header.from=customer.example
From: Pat <pat@customer.example>
To: support@example.com
Subject: Printer on fire

Help.
"""

# Microsoft 365: internal hops in Microsoft's own ranges, then its Authentication-Results, which carries
# no authserv-id at all, above the entry hop from the Internet.
MICROSOFT = """\
Received: from AM6PR04MB5123.eurprd04.prod.outlook.com (2603:10a6:20b:f0::21)
 by DB9PR04MB8456.eurprd04.prod.outlook.com with HTTPS; Mon, 2 Mar 2026 09:00:06 +0000
Received: from AS9PR06CA0123.eurprd06.prod.outlook.com (2603:10a6:20b:465::14)
 by AM6PR04MB5123.eurprd04.prod.outlook.com (2603:10a6:20b:f0::21) with Microsoft SMTP Server
 (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.20.8207.18; Mon, 2 Mar 2026 09:00:05 +0000
Authentication-Results: spf=fail (sender IP is 203.0.113.66)
 smtp.mailfrom=customer.example; dkim=none (message not signed)
 header.d=none;dmarc=fail action=quarantine header.from=customer.example;compauth=fail
 reason=000
Received-SPF: Fail (protection.outlook.com: domain of customer.example does not
 designate 203.0.113.66 as permitted sender) receiver=protection.outlook.com;
 client-ip=203.0.113.66; helo=bulk.spammer.example;
Received: from bulk.spammer.example (203.0.113.66) by
 AS9PR06CA0123.mail.protection.outlook.com (10.167.16.178) with Microsoft SMTP Server id 15.20.8207.18
 via Frontend Transport; Mon, 2 Mar 2026 09:00:04 +0000
Authentication-Results: spf=pass smtp.mailfrom=customer.example; dmarc=pass header.from=customer.example
From: pat@customer.example
Subject: Invoice

Pay.
"""


def _verdict(text: str, *, trusted: bool = True, relays: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
             | None = None, ids: tuple[str, ...] = (), domain: str | None = "spammer.example") -> object:
    return read_verdict(_headers(text), hop_trusted=trusted, hop="test hop", relays=RELAYS if relays is None
                        else relays, authserv_ids=ids, from_domain=domain)


def test_spamassassin_through_amavis_is_read_above_the_entry_hop_only() -> None:
    v = _verdict(SPAMASSASSIN)
    assert v.trusted and v.spam and v.score == pytest.approx(7.112)
    assert "203.0.113.66" in v.why
    assert v.dmarc == "unknown"  # the sender's own Authentication-Results stands below the entry hop
    assert any("X-Spam-Flag: NO" in i and "below the entry hop" in i for i in v.ignored)
    assert any(u.startswith("X-Spam-Flag: YES") for u in v.used)


def test_rspamd_fields() -> None:
    v = _verdict(RSPAMD)
    assert v.spam and v.score == pytest.approx(11.4)
    assert read_spam("X-Spamd-Result", "default: False [-0.10 / 15.00]; R_SPF_ALLOW(-0.20)[+ip4:1.2.3.4]") == (
        False, pytest.approx(-0.1))
    assert read_spam("X-Rspamd-Action", "no action") == (False, None)
    assert read_spam("X-Rspamd-Action", "greylist") == (False, None)
    assert read_spam("X-Rspamd-Action", "rewrite subject") == (True, None)
    assert read_spam("X-Rspamd-Action", "reject") == (True, None)
    assert read_spam("X-Spam-Status", "No, score=-1.9 required=5.0 tests=BAYES_00") == (False, pytest.approx(-1.9))
    assert read_spam("X-Spam-Status", "Yes, hits=12.3 required=5.0") == (True, pytest.approx(12.3))
    assert read_spam("X-Spam-Score", "3.4 (+++)") == (None, pytest.approx(3.4))
    assert read_spam("X-Spam-Flag", "yes") == (True, None)


def test_gmail_result_is_believed_by_its_authserv_id_even_below_its_received() -> None:
    v = _verdict(GMAIL, relays=[], ids=("mx.google.com",), domain="customer.example")
    assert v.dmarc == "pass" and not v.spam  # the topmost of Gmail's own counts, not the later "fail"
    without_id = _verdict(GMAIL, relays=[], domain="customer.example")
    assert without_id.dmarc == "unknown"  # below Gmail's entry hop and no configured id: anyone's words


def test_microsoft_result_has_no_authserv_id_and_counts_only_in_the_relays_part() -> None:
    microsoft = [ipaddress.ip_network("2603:10a6::/32"), ipaddress.ip_network("10.0.0.0/8")]
    v = _verdict(MICROSOFT, relays=microsoft, domain="customer.example")
    assert v.dmarc == "fail"  # Microsoft's, above the entry hop; the sender's "dmarc=pass" beneath it is not
    assert any("dmarc=pass" in i for i in v.ignored)
    assert read_dmarc("spf=pass smtp.mailfrom=x.example;dmarc=bestguesspass action=none header.from=x.example",
                      "x.example") == ("", "bestguesspass")
    # without Microsoft's ranges trusted, its first internal hop is the entry: nothing is read
    assert _verdict(MICROSOFT, relays=RELAYS, domain="customer.example").dmarc == "unknown"


def test_a_stranger_writing_not_spam_and_dmarc_pass_gains_nothing_from_an_untrusted_hop() -> None:
    forged = "X-Spam-Flag: NO\nX-Spam-Status: No, score=-50\nAuthentication-Results: mx1.example.com; dmarc=pass " \
             "header.from=customer.example\nFrom: pat@customer.example\n\nhi\n"
    v = _verdict(forged, trusted=False, ids=("mx1.example.com",), domain="customer.example")
    assert not v.trusted and v.score is None and v.dmarc == "unknown" and len(v.ignored) == 3
    yes = _verdict("X-Spam-Flag: YES\nFrom: pat@customer.example\n\nhi\n", trusted=False)
    assert not yes.spam  # a forged YES cannot hold a mail either


def test_a_forged_received_chain_does_not_extend_the_relays_part() -> None:
    """The sender writes a Received "from a trusted relay" under the real entry hop: the walk stops at
    the entry hop, so nothing below it is read, whatever it claims."""
    text = ("Received: from evil.example (evil.example [203.0.113.5]) by mx1.example.com; Mon, 2 Mar 2026\n"
            "Received: from mx0.example.com (mx0.example.com [192.0.2.9]) by mx1.example.com; Mon, 2 Mar 2026\n"
            "X-Spam-Flag: NO\nX-Spam-Score: -20\nFrom: a@evil.example\n\nx\n")
    v = _verdict(text)
    assert v.score is None and not v.used and len(v.ignored) == 2


def test_authentication_results_for_another_domain_than_from_is_not_taken() -> None:
    value = "mx1.example.com; dmarc=pass header.from=other.example"
    assert read_dmarc(value, "customer.example") == ("mx1.example.com", None)
    assert read_dmarc(value, "other.example") == ("mx1.example.com", "pass")
    # a quoted value or comment is never a result of its own (the agents' tokenizer)
    assert read_dmarc('mx1.example.com; spf=pass smtp.mailfrom="x;dmarc=pass"@a.example', "a.example")[1] is None


def test_received_from_ip_shapes() -> None:
    assert received_from_ip("from a.example (a.example [198.51.100.7]) by mx") == (True, ipaddress.ip_address(
        "198.51.100.7"))
    assert received_from_ip("from [IPv6:2001:db8::1] (helo=x) by mx") == (True, ipaddress.ip_address("2001:db8::1"))
    assert received_from_ip("from x.example (203.0.113.66) by y (10.1.2.3) with SMTP")[1] == ipaddress.ip_address(
        "203.0.113.66")  # the IP of the from clause, not the by clause's
    assert received_from_ip("by 2002:a05:7300:5b8c with SMTP id x") == (False, None)
    assert received_from_ip("from unknown (HELO mx1.example.com) by mx") == (True, None)  # no IP: outside
    headers = [("Received", "from unknown (HELO mx1.example.com) by mx"), ("X-Spam-Flag", "NO")]
    assert relays_part(headers, RELAYS)[0] == 0
