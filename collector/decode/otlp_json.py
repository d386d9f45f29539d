"""OTLP/HTTP JSON bodies -> the equivalent protobuf bytes (then decoded like gRPC payloads).

OTLP/JSON is the proto3 JSON mapping with the deviations the OTLP spec asks for
(opentelemetry-proto docs/specification.md, "JSON Protobuf Encoding"): trace and span ids are
hex strings (not base64), and receivers ignore fields with unknown names. As the proto3 mapping
allows, keys may be lowerCamelCase or the proto field names, enums integers or names, 64-bit
integers numbers or decimal strings, and `null` means "not set".

One descriptor-driven converter does the whole job (~25k spans/s on this machine, most of it
`json.loads`) and is strict where the mapping is: a value of the wrong JSON type, an id that is
not hex, an unknown enum name, an integer that does not fit its field, are errors. The error
names the field by its JSON path as the sender wrote it and says what is wrong, e.g.

    resourceSpans[0].scopeSpans[1].spans[3].traceId: expected 32 hex digits, got 31

Hex ids of the wrong (even) length are converted as they are: the receive path rejects those
items in `partial_success`, exactly as it does for protobuf bodies.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from decimal import Decimal
from typing import Any, Final

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshlens.collector.errors import DecodeError, JsonFieldError

REQUEST_TYPES: Final[dict[str, type[Message]]] = {
    "traces": ExportTraceServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "logs": ExportLogsServiceRequest,
}
# Messages nested deeper than this (the request itself is 1) are refused: protobuf's parsers
# stop at about 100 (upb's default depth limit), so the stored request could not be read back.
MAX_DEPTH: Final = 100
# Bytes fields that carry ids, and how many bytes a valid one has.
_ID_BYTES: Final = {"trace_id": 16, "span_id": 8, "parent_span_id": 8}
_KEY_VALUE: Final = "opentelemetry.proto.common.v1.KeyValue"

_FD = FieldDescriptor
# (proto type name, lowest, highest) of each integer type.
_INT_TYPES: Final = {
    _FD.TYPE_INT32: ("int32", -(2**31), 2**31 - 1),
    _FD.TYPE_SINT32: ("sint32", -(2**31), 2**31 - 1),
    _FD.TYPE_SFIXED32: ("sfixed32", -(2**31), 2**31 - 1),
    _FD.TYPE_UINT32: ("uint32", 0, 2**32 - 1),
    _FD.TYPE_FIXED32: ("fixed32", 0, 2**32 - 1),
    _FD.TYPE_INT64: ("int64", -(2**63), 2**63 - 1),
    _FD.TYPE_SINT64: ("sint64", -(2**63), 2**63 - 1),
    _FD.TYPE_SFIXED64: ("sfixed64", -(2**63), 2**63 - 1),
    _FD.TYPE_UINT64: ("uint64", 0, 2**64 - 1),
    _FD.TYPE_FIXED64: ("fixed64", 0, 2**64 - 1),
}
_INT64: Final = _INT_TYPES[_FD.TYPE_INT64]
_ENUM_RANGE: Final = ("enum", -(2**31), 2**31 - 1)
_DECIMAL_INT: Final = re.compile(r"[+-]?[0-9]+")
_DECIMAL_NUMBER: Final = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_HEX: Final = re.compile(r"[0-9a-fA-F]*")
_NOT_HEX: Final = re.compile(r"[^0-9a-fA-F]")
_BASE64: Final = re.compile(r"[A-Za-z0-9+/]*={0,2}|[A-Za-z0-9_-]*={0,2}")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_FLOAT_WORDS: Final = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _kind(kind: str) -> str:
    return f"otlp/json {kind}"


class _Invalid(Exception):
    """A value the OTLP JSON mapping does not allow. `path` collects the keys and indexes,
    innermost first, as the exception travels out of the nested containers."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str | int] = []

    def where(self) -> str:
        out = ""
        for step in reversed(self.path):
            if isinstance(step, int):
                out += f"[{step}]"
            else:
                out += f".{step}" if out else step
        return out


def _jtype(value: Any) -> str:
    """The JSON name of a decoded value's type (for messages)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, float) else repr(value)
    if isinstance(value, float) and not math.isfinite(value):
        text = {math.inf: "Infinity", -math.inf: "-Infinity"}.get(value, "NaN")
    return text if len(text) <= 40 else text[:37] + "..."


# ---- one field's conversion -----------------------------------------------------------------


class _Field:
    """How one proto field is read from JSON."""

    __slots__ = ("detail", "kind", "name", "repeated", "slot")

    def __init__(self, name: str, kind: str, detail: Any, repeated: bool, slot: str) -> None:
        self.name = name  # the proto field name (for getattr/setattr)
        self.kind = kind  # message | keyvalues | enum | int | double | bool | string | id | bytes
        self.detail = detail  # sub-descriptor, enum descriptor, int range, id length
        self.repeated = repeated
        self.slot = slot  # the field, or its oneof: two keys for one slot are an error


_specs: dict[str, dict[str, _Field]] = {}


def _spec(descriptor: Descriptor) -> dict[str, _Field]:
    """JSON key (lowerCamelCase and proto name) -> _Field, per message type."""
    spec = _specs.get(descriptor.full_name)
    if spec is not None:
        return spec
    spec = {}
    for field in descriptor.fields:
        detail: Any = None
        if field.type == _FD.TYPE_MESSAGE:
            sub = field.message_type
            assert sub is not None  # a message field has its message type
            if sub.GetOptions().map_entry:  # OTLP has no maps; fail loudly if one appears
                raise TypeError(
                    f"map field {field.full_name}: OTLP has none, this decoder reads none"
                )
            kind = "keyvalues" if sub.full_name == _KEY_VALUE and field.is_repeated else "message"
            detail = sub
        elif field.type == _FD.TYPE_ENUM:
            kind, detail = "enum", field.enum_type
        elif field.type in _INT_TYPES:
            kind, detail = "int", _INT_TYPES[field.type]
        elif field.type in (_FD.TYPE_DOUBLE, _FD.TYPE_FLOAT):
            kind = "double"
        elif field.type == _FD.TYPE_BOOL:
            kind = "bool"
        elif field.type == _FD.TYPE_STRING:
            kind = "string"
        elif field.name in _ID_BYTES:
            kind, detail = "id", _ID_BYTES[field.name]
        else:
            kind = "bytes"
        slot = field.containing_oneof.name if field.containing_oneof else field.name
        entry = _Field(field.name, kind, detail, field.is_repeated, slot)
        spec[field.json_name] = entry
        spec[field.name] = entry
    _specs[descriptor.full_name] = spec
    return spec


def _integer(value: Any, limits: tuple[str, int, int]) -> int:
    """A JSON number or decimal string as an integer within `limits` (type name, low, high)."""
    t = type(value)
    number: int | None = None
    if t is int:
        number = value
    elif t is str:
        # the common case "1544712660000000000" first: isdigit is quicker than the regex
        if value.isascii() and (value.isdigit() or _DECIMAL_INT.fullmatch(value)):
            number = int(value)
        elif _DECIMAL_NUMBER.fullmatch(value):  # "1e3", "10.0": exact, never through float
            exact = Decimal(value)
            if exact == exact.to_integral_value():
                if abs(exact.adjusted()) > 40:  # far outside every integer type
                    raise _Invalid(f"{_shown(value)} is out of range for {limits[0]}")
                number = int(exact)
    elif t is float and math.isfinite(value) and value.is_integer():
        number = int(value)
    if number is None:
        raise _Invalid(
            f"expected an integer (a number or a decimal string), got {_jtype(value)} "
            f"{_shown(value)}"
        )
    name, low, high = limits
    if not low <= number <= high:
        raise _Invalid(f"{_shown(value)} is out of range for {name} [{low}, {high}]")
    return number


def _double(value: Any) -> float:
    t = type(value)
    if t is float:
        if math.isfinite(value):
            return float(value)
        raise _Invalid(
            f'bare {_shown(value)} is not JSON; send the string "{_shown(value)}" instead'
        )
    if t is int:
        try:
            return float(value)
        except OverflowError:
            raise _Invalid(f"{_shown(value)} is too large for a double") from None
    if t is str:
        if value in _FLOAT_WORDS:
            return _FLOAT_WORDS[value]
        if _DECIMAL_NUMBER.fullmatch(value):
            number = float(value)
            if math.isfinite(number):
                return number
            raise _Invalid(f"{_shown(value)} is too large for a double")
    raise _Invalid(
        f'expected a number (or "NaN", "Infinity", "-Infinity"), got {_jtype(value)} '
        f"{_shown(value)}"
    )


def _enum(value: Any, enum: EnumDescriptor) -> int:
    if type(value) is str:
        # Enum names are ASCII: upb's lookup raises SystemError on a lone surrogate.
        known = enum.values_by_name.get(value) if value.isascii() else None
        if known is not None:
            return int(known.number)
        if not _DECIMAL_INT.fullmatch(value):
            names = [v.name for v in enum.values]
            listed = ", ".join(names if len(names) <= 8 else [*names[:4], "..."])
            raise _Invalid(
                f"unknown {enum.name} {_shown(value)} (OTLP/JSON sends enums as integers; "
                f"the {len(names)} names are {listed})"
            )
    elif type(value) is bool or type(value) not in (int, float):
        raise _Invalid(f"expected an integer (a {enum.name}), got {_jtype(value)} {_shown(value)}")
    # Numbers the enum does not name are kept (proto3 enums are open): newer senders' values.
    return _integer(value, _ENUM_RANGE)


def _hex_id(value: Any, size: int) -> bytes:
    if type(value) is not str:
        raise _Invalid(f"expected {size * 2} hex digits, got {_jtype(value)} {_shown(value)}")
    if not _HEX.fullmatch(value):
        bad = _NOT_HEX.search(value)
        at = bad.start() if bad else 0
        raise _Invalid(
            f"expected {size * 2} hex digits, got {_shown(value)} "
            f"({value[at]!r} at position {at} is not a hex digit)"
        )
    if len(value) % 2:
        raise _Invalid(f"expected {size * 2} hex digits, got {len(value)}")
    # A decodable id of another length is the receive path's to reject, item by item.
    return bytes.fromhex(value)


def _base64(value: Any) -> bytes:
    if type(value) is not str:
        raise _Invalid(f"expected a base64 string, got {_jtype(value)} {_shown(value)}")
    if not _BASE64.fullmatch(value):
        raise _Invalid(f"{_shown(value)} is not base64")
    text = value.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise _Invalid(f"{_shown(value)} is not base64 (wrong length)") from None


def _scalar(field: _Field, value: Any) -> Any:
    kind = field.kind
    if kind == "string":
        if type(value) is str:
            return value
        raise _Invalid(f"expected a string, got {_jtype(value)} {_shown(value)}")
    if kind == "int":
        return _integer(value, field.detail)
    if kind == "double":
        return _double(value)
    if kind == "bool":
        if type(value) is bool:
            return value
        raise _Invalid(f"expected true or false, got {_jtype(value)} {_shown(value)}")
    if kind == "enum":
        return _enum(value, field.detail)
    if kind == "id":
        return _hex_id(value, field.detail)
    return _base64(value)


# ---- messages -------------------------------------------------------------------------------


def _fill(message: Any, doc: Any, depth: int) -> None:
    """Set `message` from the JSON object `doc`; raises _Invalid (path relative to `doc`)."""
    if type(doc) is not dict:
        raise _Invalid(f"expected an object, got {_jtype(doc)} {_shown(doc)}")
    if depth > MAX_DEPTH:
        raise _Invalid(f"messages nested deeper than {MAX_DEPTH} levels")
    spec = _spec(message.DESCRIPTOR)
    seen: set[str] = set()
    for key, value in doc.items():
        field = spec.get(key)
        if field is None or value is None:
            # Unknown fields are ignored (OTLP spec), null means "not set"; a key must still be
            # text (a lone surrogate from a "\ud800" escape is not).
            if not key.isascii() and _SURROGATE.search(key):
                problem = _Invalid("a key with an unpaired surrogate (not valid Unicode)")
                problem.path.append(key.encode("utf-8", "backslashreplace").decode())
                raise problem
            continue
        try:
            if field.slot in seen:
                raise _Invalid(_twice(spec, doc, key))
            seen.add(field.slot)
            kind = field.kind
            if field.repeated:
                _fill_repeated(message, field, value, depth)
            elif kind == "message":
                sub = getattr(message, field.name)
                sub.SetInParent()
                _fill(sub, value, depth + 1)
            elif kind == "string" and type(value) is str:
                setattr(message, field.name, value)
            else:
                setattr(message, field.name, _scalar(field, value))
        except _Invalid as exc:
            exc.path.append(key)
            raise
        except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape
            problem = _Invalid("text with an unpaired surrogate (not valid Unicode)")
            problem.path.append(key)
            raise problem from None


def _twice(spec: dict[str, _Field], doc: dict[str, Any], key: str) -> str:
    """Why `key` clashes with an earlier key of `doc` (same field, or same oneof)."""
    field = spec[key]
    for other, value in doc.items():
        if other == key:
            break
        if value is not None and other in spec and spec[other].slot == field.slot:
            if spec[other] is field:
                return f"set twice (as {other!r} and {key!r})"
            return f"{other!r} and {key!r} are alternatives (oneof {field.slot}); give one"
    return "set twice"  # pragma: no cover - only called after a clash


def _fill_repeated(message: Any, field: _Field, value: Any, depth: int) -> None:
    if type(value) is not list:
        raise _Invalid(f"expected an array, got {_jtype(value)} {_shown(value)}")
    container = getattr(message, field.name)
    if field.kind == "keyvalues":
        _fill_attributes(container, value, depth + 1)
        return
    for i, item in enumerate(value):
        try:
            if item is None:
                raise _Invalid("null is not allowed in an array")
            if field.kind == "message":
                _fill(container.add(), item, depth + 1)
            else:
                container.append(_scalar(field, item))
        except _Invalid as exc:
            exc.path.append(i)
            raise


def _fill_attributes(container: Any, items: list[Any], depth: int) -> None:
    """Attributes are most of a request: {"key": k, "value": {"stringValue": v}} and the
    like go straight in; anything else (and anything wrong) through `_fill`, which names
    the problem."""
    for i, item in enumerate(items):
        if type(item) is dict and len(item) == 2:
            key, value = item.get("key"), item.get("value")
            if type(key) is str and type(value) is dict and len(value) == 1:
                ((which, v),) = value.items()
                t = type(v)
                size = len(container)
                try:
                    if which == "stringValue" and t is str:
                        container.add(key=key).value.string_value = v
                        continue
                    if which == "boolValue" and t is bool:
                        container.add(key=key).value.bool_value = v
                        continue
                    if which == "intValue" and (t is int or t is str):
                        container.add(key=key).value.int_value = _integer(v, _INT64)
                        continue
                    if which == "doubleValue" and (t is float or t is int):
                        container.add(key=key).value.double_value = _double(v)
                        continue
                except (_Invalid, UnicodeEncodeError):
                    del container[size:]  # the half-made entry; `_fill` says what is wrong
        try:
            if item is None:
                raise _Invalid("null is not allowed in an array")
            _fill(container.add(), item, depth)
        except _Invalid as exc:
            exc.path.append(i)
            raise


# ---- the entry point ------------------------------------------------------------------------


def _load(kind: str, body: bytes) -> Any:
    if not body.strip():
        raise DecodeError(_kind(kind), "empty body (expected a JSON object)")
    try:
        text = body.decode("utf-8")  # JSON between systems is UTF-8 (RFC 8259 section 8.1)
    except UnicodeDecodeError as exc:
        raise DecodeError(
            _kind(kind), f"body is not UTF-8 (byte {exc.start}: {body[exc.start : exc.end]!r})"
        ) from None
    try:
        return json.loads(text.removeprefix("\ufeff"))
    except json.JSONDecodeError as exc:
        at = f"line {exc.lineno} column {exc.colno}"
        if exc.pos >= len(exc.doc.rstrip()) or exc.msg.startswith("Unterminated string"):
            raise DecodeError(
                _kind(kind), f"JSON ends early at {at} (truncated body?): {exc.msg}"
            ) from None
        raise DecodeError(_kind(kind), f"invalid JSON at {at}: {exc.msg}") from None
    except RecursionError:
        raise DecodeError(_kind(kind), "JSON nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal of more than 4300 digits
        raise DecodeError(_kind(kind), f"invalid JSON: {exc}") from None


def otlp_json_to_proto(kind: str, body: bytes) -> bytes:
    """An OTLP/HTTP JSON body of `kind` ("traces", "metrics", "logs") as protobuf bytes.

    Raises DecodeError when the body is not JSON, JsonFieldError (a DecodeError) naming the
    field's JSON path and the problem when a value does not fit the OTLP schema.
    """
    request_type = REQUEST_TYPES.get(kind)
    if request_type is None:
        raise ValueError(f"unknown OTLP signal {kind!r}; expected one of {sorted(REQUEST_TYPES)}")
    doc = _load(kind, body)
    if type(doc) is not dict:
        raise DecodeError(
            _kind(kind),
            f"body must be a JSON object (an {request_type.DESCRIPTOR.name}), got {_jtype(doc)}",
        )
    message = request_type()
    try:
        _fill(message, doc, 1)
    except _Invalid as exc:
        raise JsonFieldError(_kind(kind), exc.where(), exc.problem) from None
    except RecursionError:
        raise DecodeError(_kind(kind), "JSON nested too deeply") from None
    return message.SerializeToString()
