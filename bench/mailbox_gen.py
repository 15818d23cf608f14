"""A realistic benchmark mailbox: sizes 2-200 KB (mean about 30 KB), plain, alternative and mixed MIME.

About 55 % plain text of 2-8 KB, 20 % multipart/alternative (text + HTML), 25 % multipart/mixed
with a base64 attachment of 30-170 KB; each with the trace and list headers real mail carries.
Deterministic (seeded), so mailgw and Dovecot get byte-identical copies.
"""

from __future__ import annotations

import base64
import os
import random

WORDS = ("the meeting report budget review draft please find attached regarding project update "
         "schedule thanks regards team customer invoice quarter release notes agenda minutes "
         "proposal contract feedback deadline tomorrow next week kind").split()


def _text(rng: random.Random, size: int) -> bytes:
    lines, total = [], 0
    while total < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 12))).capitalize() + "."
        lines.append(line.encode())
        total += len(line) + 2
    return b"\r\n".join(lines) + b"\r\n"


def _headers(rng: random.Random, i: int, content_type: bytes) -> bytes:
    sender = rng.randint(1, 400)
    day, hour, minute = 1 + i % 28, i % 24, i % 60
    lists = b"List-Id: <dev.lists.example.org>\r\n" if i % 7 == 0 else b""
    return (b"Return-Path: <sender%d@example.org>\r\n"
            b"Received: from mx%d.example.org (mx%d.example.org [192.0.2.%d])\r\n"
            b"\tby mail.example.test with ESMTPS id %08X\r\n\tfor <alice@example.test>; "
            b"Mon, %d Nov 2026 %02d:%02d:11 +0000\r\n"
            b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=s1; h=from:to:subject:date;\r\n"
            b"\tbh=%s;\r\n\tb=%s\r\n"
            b"From: Sender %d <sender%d@example.org>\r\nTo: Alice Example <alice@example.test>\r\n"
            b"Cc: team@example.test, Bob <bob@example.test>\r\n"
            b"Subject: %s (%d)\r\nDate: Mon, %d Nov 2026 %02d:%02d:10 +0000\r\n"
            b"Message-ID: <%d.%08X@example.org>\r\n%sMIME-Version: 1.0\r\nX-Mailer: bench 1.0\r\n"
            b"Content-Type: %s\r\n"
            % (sender, i % 9, i % 9, i % 250, rng.getrandbits(32), day, hour, minute,
               base64.b64encode(rng.randbytes(32)), base64.b64encode(rng.randbytes(96)),
               sender, sender, " ".join(rng.choice(WORDS) for _ in range(5)).capitalize().encode(), i,
               day, hour, minute, i, rng.getrandbits(32), lists, content_type))


def message(i: int) -> bytes:
    """Message number i of the realistic mailbox."""
    rng = random.Random(i * 7919 + 13)
    kind = rng.random()
    if kind < 0.55:
        return (_headers(rng, i, b"text/plain; charset=utf-8") +
                b"Content-Transfer-Encoding: 8bit\r\n\r\n" + _text(rng, rng.randint(2000, 8000)))
    boundary = b"=_b%08X" % rng.getrandbits(32)
    text = _text(rng, rng.randint(1500, 6000))
    if kind < 0.75:
        html = b"<html><body><p>" + text.replace(b"\r\n", b"</p>\r\n<p>") + b"</p></body></html>\r\n"
        parts = [(b"text/plain; charset=utf-8", b"8bit", text), (b"text/html; charset=utf-8", b"8bit", html)]
        ctype = b"multipart/alternative; boundary=\"%s\"" % boundary
    else:
        blob = base64.encodebytes(rng.randbytes(rng.randint(22000, 128000))).replace(b"\n", b"\r\n")
        parts = [(b"text/plain; charset=utf-8", b"8bit", text),
                 (b"application/pdf; name=\"report-%d.pdf\"" % i, b"base64", blob)]
        ctype = b"multipart/mixed; boundary=\"%s\"" % boundary
    body = b"This is a multi-part message in MIME format.\r\n"
    for ptype, enc, data in parts:
        body += b"--%s\r\nContent-Type: %s\r\nContent-Transfer-Encoding: %s\r\n" % (boundary, ptype, enc)
        if enc == b"base64":
            body += b"Content-Disposition: attachment; filename=\"report-%d.pdf\"\r\n" % i
        body += b"\r\n" + data
    body += b"--%s--\r\n" % boundary
    return _headers(rng, i, ctype) + b"\r\n" + body


def make_maildir(path: str, count: int, gen=message) -> int:  # type: ignore[no-untyped-def]
    """Write `count` messages into path/new; returns the total octets."""
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    total = 0
    for i in range(count):
        data = gen(i)
        total += len(data)
        with open(os.path.join(path, "new", "%d.M%dP1.bench" % (1700000000 + i, i)), "wb") as f:
            f.write(data)
    return total
