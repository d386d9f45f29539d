"""Repair invalid UTF-8 in the `string` fields of an encoded protobuf message.

upb refuses a whole message when one proto3 `string` field holds bytes that are not UTF-8, and
Envoy forwards such bytes from clients (`User-Agent: \\xff`), so one hostile request would keep
its neighbours out of the store. The receivers call `repair` only after a parse failed: it walks
the wire format with the message's descriptor and replaces each invalid sequence with U+FFFD
(what `bytes.decode(errors="replace")` does), leaving every other byte as it was. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError

# Deeper than protobuf's own recursion limit (100) cannot parse anyway.
MAX_DEPTH: Final = 100
_STRING: Final = FieldDescriptor.TYPE_STRING
_MESSAGE: Final = FieldDescriptor.TYPE_MESSAGE


@dataclass(frozen=True, slots=True)
class Repaired:
    payload: bytes
    fields: int  # string fields whose bytes were replaced (0: payload is the input)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError(f"truncated varint at byte {pos}")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_classes: dict[str, Any] = {}


def _parses(field: Any, raw: bytes) -> bool:
    """Whether a sub-message parses as it is (upb, C speed): most entries of a repaired
    message are fine and are copied without walking them in Python."""
    desc = field.message_type
    cls = _classes.get(desc.full_name)
    if cls is None:
        cls = _classes[desc.full_name] = message_factory.GetMessageClass(desc)
    try:
        cls.FromString(raw)
    except DecodeError:
        return False
    return True


def _walk(desc: Any, buf: bytes, depth: int) -> tuple[bytes, int]:
    if depth > MAX_DEPTH:
        raise ValueError(f"message nested deeper than {MAX_DEPTH}")
    out: list[bytes] = []
    fixed = 0
    pos = start = 0  # buf[start:pos] is copied unchanged
    n = len(buf)
    by_number = desc.fields_by_number
    while pos < n:
        tag_at = pos
        tag, pos = _varint(buf, pos)
        wire = tag & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, body = _varint(buf, pos)
            end = body + length
            if end > n:
                raise ValueError(f"length {length} at byte {pos} runs past the end")
            field = by_number.get(tag >> 3)
            new: bytes | None = None
            if field is not None and field.type == _STRING:
                try:
                    buf[body:end].decode("utf-8")
                except UnicodeDecodeError:
                    new = buf[body:end].decode("utf-8", "replace").encode("utf-8")
                    fixed += 1
            elif field is not None and field.type == _MESSAGE and not _parses(field, buf[body:end]):
                inner, k = _walk(field.message_type, buf[body:end], depth + 1)
                if k:
                    new, fixed = inner, fixed + k
            if new is not None:
                out.append(buf[start:tag_at])
                out.append(buf[tag_at:pos])  # the tag
                out.append(_encode_varint(len(new)))
                out.append(new)
                start = end
            pos = end
        else:  # groups (wire types 3, 4) are not used by any message we receive
            raise ValueError(f"unsupported wire type {wire} at byte {tag_at}")
        if pos > n:
            raise ValueError(f"field at byte {tag_at} runs past the end")
    if not fixed:
        return buf, 0
    out.append(buf[start:])
    return b"".join(out), fixed


def repair(desc: Any, raw: bytes) -> Repaired:
    """`raw` with invalid UTF-8 in `desc`'s string fields (at any depth) replaced by U+FFFD.
    `desc` is a message Descriptor (pure-Python or upb: typed Any, they share no base class).
    Raises ValueError when the wire data itself is malformed (then nothing can be kept)."""
    payload, fields = _walk(desc, bytes(raw), 0)
    return Repaired(payload, fields)
