"""Build the TNEF blob inside winmail-dat.eml (run once; the .eml is what tests read).

The blob has the structure Outlook writes for a rich-text mail with one file:
TNEF version, OEM code page, message class, then per attachment the
rendering data, title (8.3 name in the OEM code page), the data and a MAPI
property block carrying the long Unicode file name. Layout per MS-OXTNEF.
"""

from __future__ import annotations

import base64
import struct
import sys

SIGNATURE = 0x223E9F78
LVL_MESSAGE, LVL_ATTACHMENT = 1, 2


def attribute(level: int, attr_id: int, attr_type: int, data: bytes) -> bytes:
    checksum = sum(data) & 0xFFFF
    return struct.pack("<BHHI", level, attr_id, attr_type, len(data)) + data + struct.pack("<H", checksum)


def mapi_unicode(prop_id: int, text: str) -> bytes:
    raw = (text + "\x00").encode("utf-16-le")
    pad = b"\x00" * (-len(raw) % 4)
    return struct.pack("<HHII", 0x001F, prop_id, 1, len(raw)) + raw + pad


def build(files: list[tuple[str, str, bytes]]) -> bytes:
    out = struct.pack("<IH", SIGNATURE, 0x0001)
    out += attribute(LVL_MESSAGE, 0x9006, 0x0008, struct.pack("<I", 0x00010000))  # attTnefVersion
    out += attribute(LVL_MESSAGE, 0x9007, 0x0006, struct.pack("<II", 1252, 0))  # attOemCodepage
    out += attribute(LVL_MESSAGE, 0x8008, 0x0007, b"IPM.Microsoft Mail.Note\x00")  # attMessageClass
    for short_name, long_name, data in files:
        rend = struct.pack("<HIIHI", 0x0001, 0xFFFFFFFF, 0, 0, 0)  # attAttachRendData: file, no position
        out += attribute(LVL_ATTACHMENT, 0x9002, 0x0006, rend)
        out += attribute(LVL_ATTACHMENT, 0x8010, 0x0001, short_name.encode("cp1252") + b"\x00")  # attAttachTitle
        out += attribute(LVL_ATTACHMENT, 0x800F, 0x0006, data)  # attAttachData
        props = struct.pack("<I", 1) + mapi_unicode(0x3707, long_name)  # PR_ATTACH_LONG_FILENAME
        out += attribute(LVL_ATTACHMENT, 0x9005, 0x0006, props)  # attAttachment
    return out


if __name__ == "__main__":
    blob = build(
        [
            ("REPORT~1.TXT", "Quarterly report.txt", b"Revenue up, printer budget down.\r\n"),
            ("BERSIC~1.CSV", "Übersicht März.csv", "Monat;Drucker\r\nMärz;1\r\n".encode("cp1252")),
        ]
    )
    sys.stdout.write(base64.encodebytes(blob).decode().replace("\n", "\r\n"))
