"""RFC 1320 MD4 and the NT hash (MD4 of UTF-16LE), for provisioning users and tests only.

OpenSSL 3 removed MD4 from hashlib's default provider and `cryptography` has none, so it is
vendored here. Verifying NTLM never needs it: that starts from the stored 16-byte NT hash.
"""

from __future__ import annotations

import struct

_MASK = 0xFFFFFFFF


def _rotl(x: int, n: int) -> int:
    x &= _MASK
    return ((x << n) | (x >> (32 - n))) & _MASK


def md4(data: bytes) -> bytes:
    """The 16-byte MD4 digest of `data` (RFC 1320 §3)."""
    length_bits = (len(data) * 8) & 0xFFFFFFFFFFFFFFFF
    msg = data + b"\x80" + b"\0" * ((55 - len(data)) % 64) + struct.pack("<Q", length_bits)
    a, b, c, d = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476
    for off in range(0, len(msg), 64):
        x = struct.unpack("<16I", msg[off:off + 64])
        aa, bb, cc, dd = a, b, c, d
        # Round 1: F(x,y,z) = xy v not(x) z
        for i in (0, 4, 8, 12):
            a = _rotl(a + ((b & c) | (~b & d)) + x[i], 3)
            d = _rotl(d + ((a & b) | (~a & c)) + x[i + 1], 7)
            c = _rotl(c + ((d & a) | (~d & b)) + x[i + 2], 11)
            b = _rotl(b + ((c & d) | (~c & a)) + x[i + 3], 19)
        # Round 2: G(x,y,z) = xy v xz v yz, constant 0x5A827999
        for i in (0, 1, 2, 3):
            a = _rotl(a + ((b & c) | (b & d) | (c & d)) + x[i] + 0x5A827999, 3)
            d = _rotl(d + ((a & b) | (a & c) | (b & c)) + x[i + 4] + 0x5A827999, 5)
            c = _rotl(c + ((d & a) | (d & b) | (a & b)) + x[i + 8] + 0x5A827999, 9)
            b = _rotl(b + ((c & d) | (c & a) | (d & a)) + x[i + 12] + 0x5A827999, 13)
        # Round 3: H(x,y,z) = x xor y xor z, constant 0x6ED9EBA1
        for i in (0, 2, 1, 3):
            a = _rotl(a + (b ^ c ^ d) + x[i] + 0x6ED9EBA1, 3)
            d = _rotl(d + (a ^ b ^ c) + x[i + 8] + 0x6ED9EBA1, 9)
            c = _rotl(c + (d ^ a ^ b) + x[i + 4] + 0x6ED9EBA1, 11)
            b = _rotl(b + (c ^ d ^ a) + x[i + 12] + 0x6ED9EBA1, 15)
        a, b, c, d = (a + aa) & _MASK, (b + bb) & _MASK, (c + cc) & _MASK, (d + dd) & _MASK
    return struct.pack("<4I", a, b, c, d)


def nt_hash(password: str) -> bytes:
    """The NT hash of a password: MD4(UTF-16LE(password)) (MS-NLMP 3.3.1 NTOWFv1)."""
    return md4(password.encode("utf-16-le"))
