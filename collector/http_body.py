"""Reading an HTTP/1.1 request body, all of it or nothing: Content-Length or chunked, with the
size limit applied while reading (a chunked body cannot announce its size first).

A body that ends early (the client gave up mid-send) or is malformed raises BodyError; the
caller then answers (if it still can), closes the connection and never hands the prefix to a
handler, so nothing is stored or acknowledged and the client's retry is not a duplicate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, Protocol

MAX_LINE: Final = 4096  # a chunk-size line or a trailer line
HEX: Final = b"0123456789abcdefABCDEF"


class Reader(Protocol):
    """A buffered binary stream (the handler's rfile)."""

    def read(self, n: int, /) -> bytes: ...

    def readline(self, limit: int, /) -> bytes: ...


class BodyError(Exception):
    """The body could not be read: `status` is the answer, if the client is still there."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _too_large(limit: int, got: int) -> BodyError:
    return BodyError(413, f"body of {got}+ bytes exceeds the limit of {limit} bytes")


def body_length(headers: Mapping[str, Sequence[str]]) -> int | None:
    """The framing: a byte count, or None for chunked. `headers`: lower-case name -> values.

    Both headers, or differing Content-Lengths, are refused (request smuggling)."""
    te = [
        v.strip().lower() for vals in headers.get("transfer-encoding", ()) for v in vals.split(",")
    ]
    lengths = {v.strip() for v in headers.get("content-length", ())}
    if te:
        if lengths:
            raise BodyError(400, "both Transfer-Encoding and Content-Length given")
        if te != ["chunked"]:
            raise BodyError(501, f"unsupported Transfer-Encoding {', '.join(te)!r} (use chunked)")
        return None
    if not lengths:
        return 0
    if len(lengths) > 1:
        raise BodyError(400, f"conflicting Content-Length headers: {sorted(lengths)}")
    (text,) = lengths
    if not text.isdigit():
        raise BodyError(400, f"bad Content-Length {text!r}")
    return int(text)


def _read_exact(rfile: Reader, n: int, what: str) -> bytes:
    data = rfile.read(n)
    if len(data) != n:
        raise BodyError(400, f"{what} ended after {len(data)} of {n} bytes")
    return data


def _line(rfile: Reader) -> bytes:
    line = rfile.readline(MAX_LINE + 1)
    if not line.endswith(b"\n"):
        if len(line) > MAX_LINE:
            raise BodyError(400, f"chunk line longer than {MAX_LINE} bytes")
        raise BodyError(400, "chunked body ended before its last chunk")
    return line


def read_chunked(rfile: Reader, limit: int) -> bytes:
    """A chunked body (RFC 9112 section 7.1), trailers read and dropped."""
    parts: list[bytes] = []
    total = 0
    while True:
        line = _line(rfile)
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or size_text.strip(HEX) or len(size_text) > 16:
            raise BodyError(400, f"bad chunk size {size_text[:20]!r}")
        size = int(size_text, 16)
        if size == 0:
            break
        if total + size > limit:
            raise _too_large(limit, total + size)
        parts.append(_read_exact(rfile, size, "chunk"))
        total += size
        if _line(rfile).strip():
            raise BodyError(400, "chunk data longer than its size")
    while _line(rfile).strip():  # trailer fields until the empty line
        pass
    return b"".join(parts)


def read_body(rfile: Reader, length: int | None, limit: int) -> bytes:
    """`length` from body_length: a byte count (checked against `limit` first) or None."""
    if length is None:
        return read_chunked(rfile, limit)
    if length > limit:
        raise BodyError(413, f"body of {length} bytes exceeds the limit of {limit} bytes")
    return _read_exact(rfile, length, "body") if length else b""
