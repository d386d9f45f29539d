"""What a person pastes into the trace search box, as the store spells trace and request ids.

Pure. The collector stores trace ids as 32 lower-case hex digits (a 64-bit B3 id is left-padded
with zeros, a W3C `traceparent` gives its second field) and request ids (`x-request-id`) as the
proxy saw them. A pasted id can be any of these, in any case: one text gives the trace ids and
the request ids to look for, so a request id never gets used as a trace id (the "no spans
stored" bug: the page looked up spans with the request id).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

_HEX: Final = re.compile(r"^[0-9a-f]+$")
_TRACEPARENT: Final = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_B3_SINGLE: Final = re.compile(r"^([0-9a-f]{16}|[0-9a-f]{32})-[0-9a-f]{16}(-.*)?$")


@dataclass(frozen=True, slots=True)
class Lookup:
    """The ids one search text may stand for."""

    text: str
    trace_ids: tuple[str, ...]
    request_ids: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.text


def normalize_trace_id(text: str) -> str:
    """The stored spelling of a trace id ('' when `text` is not one): 32 lower-case hex."""
    t = text.strip().lower()
    m = _TRACEPARENT.match(t) or _B3_SINGLE.match(t)
    if m:
        t = m.group(1)
    if t.startswith("0x"):
        t = t[2:]
    if _HEX.match(t) and len(t) in (16, 32):
        return t.rjust(32, "0")
    return ""


def parse_lookup(text: str) -> Lookup:
    """Trace ids and request ids a pasted text may be. Any text may be a request id
    (x-request-id is free text, usually a UUID), both as typed and lower-cased."""
    raw = text.strip()
    if not raw:
        return Lookup("", (), ())
    tid = normalize_trace_id(raw)
    rids = tuple(dict.fromkeys((raw, raw.lower())))
    return Lookup(raw, (tid,) if tid else (), rids)
