"""Protobuf wire bytes written by hand, for tests that need what no message class writes
(malformed, truncated or unusual encodings)."""

from __future__ import annotations


def varint(n: int) -> bytes:
    """Base-128 varint of a non-negative integer."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, wire_type: int, body: bytes) -> bytes:
    """One field: its tag, then `body` (length-prefixed for wire type 2, as is otherwise)."""
    tag = varint(number << 3 | wire_type)
    return tag + (varint(len(body)) + body if wire_type == 2 else body)
