"""OTLP attribute values -> JSON-safe Python values and canonical JSON text.

Every decoder stores attributes as a JSON object with sorted keys (compact, UTF-8), so equal
attribute sets give equal text whatever order the sender used. Values follow the OTLP/JSON
mapping where JSON has no native form: bytes -> base64 text, non-finite doubles -> "NaN",
"Infinity", "-Infinity"; arrays and key-value lists nest.

The hot path (spans and logs) does not build KeyValue objects at all: `otlp_wire` hands us each
attribute as its raw encoded bytes, and `KeyValueCache` maps those bytes to (key, value, JSON
fragment). In real traffic most attributes repeat exactly (method, route, host, status code), so
a span's attributes cost a few dictionary lookups instead of a protobuf object walk.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from meshlens.collector.decode import limits
from meshlens.collector.store.schema import UNKNOWN

# protobuf already refuses messages nested deeper than 100; this keeps Python recursion smaller.
MAX_DEPTH: Final = 32

_encode_json = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
).encode
# C-accelerated JSON string literal (no escaping of non-ASCII, like ensure_ascii=False).
_encode_string: Callable[[str], str] = json.encoder.encode_basestring

Entry = tuple[str, object, str]  # (key, JSON-safe value, '"key":value' JSON fragment)


def _float(x: float) -> float | str:
    if math.isfinite(x):
        return x
    if math.isnan(x):
        return "NaN"
    return "Infinity" if x > 0 else "-Infinity"


def any_value_to_python(value: AnyValue, depth: int = 0) -> object:
    """An OTLP AnyValue as a JSON-safe Python value (None when no value is set)."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which == "bool_value":
        return value.bool_value
    if which == "double_value":
        return _float(value.double_value)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if depth >= MAX_DEPTH:
        return "..."
    if which == "array_value":
        return [any_value_to_python(v, depth + 1) for v in value.array_value.values]
    if which == "kvlist_value":
        return {
            kv.key: any_value_to_python(kv.value, depth + 1) for kv in value.kvlist_value.values
        }
    return None


def attributes_to_dict(attributes: Iterable[KeyValue]) -> dict[str, object]:
    """KeyValues as a dict (a repeated key keeps its last value, like the SDKs do)."""
    return {kv.key: any_value_to_python(kv.value) for kv in attributes}


def limited_dict(
    attributes: Sequence[KeyValue], count: int, value_length: int
) -> tuple[dict[str, object], int]:
    """`attributes_to_dict` of the first `count` attributes (0: all), text values cut to
    `value_length` characters (0: whole), and how many attributes were dropped."""
    dropped = 0
    if count > 0 and len(attributes) > count:
        dropped = len(attributes) - count
        attributes = attributes[:count]
    d = attributes_to_dict(attributes)
    if value_length > 0:
        d = {k: truncate(v, value_length) for k, v in d.items()}
    return d, dropped


def truncate(value: object, length: int) -> object:
    """A text value (or the text in an array) cut to `length` characters, as the OTel SDKs'
    attribute value length limit does; other values unchanged."""
    if type(value) is str:
        return value[:length] if len(value) > length else value
    if type(value) is list:
        return [truncate(v, length) for v in value]
    return value


def to_json(value: object) -> str:
    """Canonical compact JSON (sorted keys, UTF-8) of a JSON-safe value."""
    return _encode_json(value)


def any_value_to_text(value: AnyValue) -> str:
    """A log body as text: strings as they are, anything else as JSON ('' when unset)."""
    if value.WhichOneof("value") == "string_value":
        return value.string_value
    py = any_value_to_python(value)
    return "" if py is None else to_json(py)


class KeyValueCache:
    """Raw encoded KeyValue bytes -> (key, value, JSON fragment), bounded.

    One cache per process (decoders run in worker processes); cleared wholesale when full, which
    keeps memory bounded when a high-cardinality attribute (a URL with ids) floods it.
    """

    __slots__ = ("_entries", "max_entries")

    def __init__(self, max_entries: int = 50_000) -> None:
        self._entries: dict[bytes, Entry] = {}
        self.max_entries = max_entries

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self, raws: Iterable[bytes]) -> list[Entry]:
        """Entries of raw KeyValues; bad bytes raise protobuf's DecodeError or a ValueError."""
        get = self._entries.get
        return [get(raw) or self._miss(raw) for raw in raws]

    def limited(
        self, raws: Sequence[bytes], count: int, value_length: int
    ) -> tuple[list[Entry], int]:
        """`entries` of the first `count` raw KeyValues (0: all), text values cut to
        `value_length` characters (0: whole); and how many attributes were dropped."""
        dropped = 0
        if count > 0 and len(raws) > count:
            dropped = len(raws) - count
            raws = raws[:count]
        entries = self.entries(raws)
        if value_length > 0:
            entries = [_cut(e, value_length) for e in entries]
        return entries, dropped

    def _miss(self, raw: bytes) -> Entry:
        parsed = _short_kv(raw)
        if parsed is None:
            kv = KeyValue.FromString(raw)
            key, value = kv.key, any_value_to_python(kv.value)
            fragment = _encode_string(key) + ":" + _encode_json(value)
        else:
            key, value = parsed
            text = _encode_string(value) if type(value) is str else str(value)
            fragment = _encode_string(key) + ":" + text
        entry = (key, value, fragment)
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[raw] = entry
        return entry


def _cut(entry: Entry, length: int) -> Entry:
    key, value, _ = entry
    cut = truncate(value, length)
    if cut == value:
        return entry
    return key, cut, _encode_string(key) + ":" + _encode_json(cut)


def _short_kv(raw: bytes) -> tuple[str, str | int] | None:
    """Parse the most common KeyValues by hand: a key with a string or integer value.

    Wire form: 0a <klen> key 12 <vlen> (0a <slen> string | 18 <varint>), lengths as 1-byte
    varints (< 128). Anything else (other value types, long strings, extra fields) returns None
    and goes through protobuf. Raises UnicodeDecodeError (a ValueError) on invalid UTF-8, as
    protobuf would.
    """
    n = len(raw)
    if n < 5 or raw[0] != 0x0A:
        return None
    klen = raw[1]
    v = 2 + klen
    if klen >= 0x80 or v + 3 > n or raw[v] != 0x12:
        return None
    vlen = raw[v + 1]
    if vlen >= 0x80 or v + 2 + vlen != n:
        return None
    tag = raw[v + 2]
    if tag == 0x0A:  # string_value
        if vlen < 2 or raw[v + 3] != vlen - 2:
            return None
        return raw[2:v].decode(), raw[v + 4 :].decode()
    if tag == 0x18 and 2 <= vlen <= 11:  # int_value: a varint filling the rest exactly
        value = shift = 0
        for i in range(v + 3, n):
            b = raw[i]
            value |= (b & 0x7F) << shift
            shift += 7
            if (b < 0x80) != (i == n - 1):
                return None
        if value >= 1 << 64:
            return None
        return raw[2:v].decode(), value - (1 << 64) if value >= 1 << 63 else value
    return None


def entries_json(entries: list[Entry]) -> tuple[dict[str, object], str]:
    """(dict, canonical JSON object) of a span's or log record's attribute entries.

    Fragments are sorted as text, which orders them by key (exactly `sort_keys` order unless a
    key holds a character below '#' or a backslash; still deterministic then).
    """
    if not entries:
        return {}, "{}"
    d = {e[0]: e[1] for e in entries}
    if len(d) != len(entries):  # a repeated key: last one wins, as in attributes_to_dict
        return d, _encode_json(d)
    fragments = [e[2] for e in entries]
    fragments.sort()
    return d, "{" + ",".join(fragments) + "}"


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    """What rows take from their resource: service identity and all attributes."""

    service_name: str
    service_namespace: str
    service_version: str
    attributes: dict[str, object]
    attributes_json: str
    dropped: int = 0  # attributes over the resource attribute count limit


def _text(value: object) -> str:
    if value is None or value == "":
        return UNKNOWN
    return value if isinstance(value, str) else to_json(value)


def resource_info_from_dict(attributes: dict[str, object], dropped: int = 0) -> ResourceInfo:
    return ResourceInfo(
        service_name=_text(attributes.get("service.name")),
        service_namespace=_text(attributes.get("service.namespace")),
        service_version=_text(attributes.get("service.version")),
        attributes=attributes,
        attributes_json=to_json(attributes),
        dropped=dropped,
    )


def resource_info(resource: Resource) -> ResourceInfo:
    """ResourceInfo within this process's resource attribute limits (`limits.current`)."""
    lim = limits.current()
    attributes, dropped = limited_dict(
        resource.attributes, lim.resource_attribute_count, lim.attribute_value_length
    )
    return resource_info_from_dict(attributes, dropped)


def resource_info_from_bytes(raw: bytes) -> ResourceInfo:
    """ResourceInfo of an encoded Resource (raises protobuf's DecodeError on bad bytes)."""
    return resource_info(Resource.FromString(raw))


_resources: dict[tuple[int, bytes, limits.DecodeLimits], ResourceInfo] = {}
# Longer resources are memoised by a digest: 4096 keys of a 16 MiB request would be 64 GiB.
_KEY_BYTES: Final = 1024


def resource_for(raw: bytes) -> ResourceInfo:
    """ResourceInfo of encoded Resource bytes, memoised per process (an SDK or a proxy sends
    the same resource in every request). Bad bytes raise protobuf's DecodeError."""
    digest = raw if len(raw) <= _KEY_BYTES else hashlib.blake2b(raw, digest_size=32).digest()
    key = (len(raw), digest, limits.current())
    info = _resources.get(key)
    if info is None:
        info = resource_info_from_bytes(raw)
        if len(_resources) >= 4096:
            _resources.clear()
        _resources[key] = info
    return info
