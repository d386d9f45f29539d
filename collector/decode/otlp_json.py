"""OTLP/HTTP JSON bodies -> the equivalent protobuf bytes (then decoded like gRPC payloads).

Differences from protobuf's canonical JSON mapping that the OTLP spec asks for: trace and span
ids are hex strings (not base64); receivers ignore unknown fields. The rest is the proto3 JSON
mapping, which `google.protobuf.json_format` implements: lowerCamelCase or original field
names, enums as names or integers, 64-bit integers as strings or numbers.

json_format is slow (~7k spans/s on this machine), so plain bodies take a descriptor-driven
fast path (~25k spans/s, most of it json.loads) that accepts only forms it converts exactly as
json_format would; anything else falls back to json_format, which also words the errors.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any, Final

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.errors import DecodeError

REQUEST_TYPES: Final[dict[str, type[Message]]] = {
    "traces": ExportTraceServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "logs": ExportLogsServiceRequest,
}
# Keys that hold ids anywhere in an OTLP request (spans, links, log records, exemplars).
_ID_KEYS: Final = frozenset(
    {"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"}
)
_HEX: Final = frozenset("0123456789abcdefABCDEF")


def _kind(kind: str) -> str:
    return f"otlp/json {kind}"


def _hex_to_base64(value: object, kind: str, where: str) -> str:
    if not isinstance(value, str):
        raise DecodeError(
            _kind(kind), f"{where}: expected a hex string, got {type(value).__name__}"
        )
    if len(value) % 2 or not _HEX.issuperset(value):
        shown = value if len(value) <= 64 else value[:64] + "..."
        raise DecodeError(_kind(kind), f"{where}: {shown!r} is not a hex-encoded id")
    return base64.b64encode(bytes.fromhex(value)).decode("ascii")


def _fix_ids(node: Any, kind: str, where: str) -> None:
    """Rewrite hex ids to base64 in place (what json_format expects for `bytes` fields)."""
    stack: list[tuple[Any, str]] = [(node, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in _ID_KEYS and value is not None:
                    item[key] = _hex_to_base64(value, kind, f"{path}.{key}")
                elif isinstance(value, dict | list):
                    stack.append((value, f"{path}.{key}"))
        elif isinstance(item, list):
            for i, value in enumerate(item):
                if isinstance(value, dict | list):
                    stack.append((value, f"{path}[{i}]"))


class _Fallback(Exception):
    """The fast path met something it does not handle exactly like json_format."""


_FD = FieldDescriptor
_INT_RANGES: Final = {
    _FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    _FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _FD.TYPE_UINT32: (0, 2**32 - 1),
    _FD.TYPE_FIXED32: (0, 2**32 - 1),
    _FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    _FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _FD.TYPE_UINT64: (0, 2**64 - 1),
    _FD.TYPE_FIXED64: (0, 2**64 - 1),
}
_KEY_VALUE: Final = "opentelemetry.proto.common.v1.KeyValue"
_INT64: Final = (-(2**63), 2**63 - 1)
_Spec = dict[str, tuple[Any, ...]]
_specs: dict[str, _Spec] = {}


def _spec(descriptor: Descriptor) -> _Spec:
    """JSON key (lowerCamelCase and proto name) -> (field name, kind, detail, repeated, slot)."""
    spec = _specs.get(descriptor.full_name)
    if spec is not None:
        return spec
    spec = {}
    _specs[descriptor.full_name] = spec
    for field in descriptor.fields:
        detail: Any = None
        if field.type == _FD.TYPE_MESSAGE:
            sub = field.message_type
            if sub is None or sub.GetOptions().map_entry:
                continue  # (no maps in OTLP) -> unknown key -> fallback
            kind = "keyvalues" if sub.full_name == _KEY_VALUE and field.is_repeated else "message"
            detail = sub
        elif field.type == _FD.TYPE_ENUM:
            kind, detail = "enum", field.enum_type
        elif field.type in _INT_RANGES:
            kind, detail = "int", _INT_RANGES[field.type]
        elif field.type == _FD.TYPE_DOUBLE:
            kind = "double"
        elif field.type == _FD.TYPE_BOOL:
            kind = "bool"
        elif field.type == _FD.TYPE_STRING:
            kind = "string"
        elif field.name in ("trace_id", "span_id", "parent_span_id"):
            kind = "id"
        else:
            continue  # other bytes fields (base64) -> fallback
        # A oneof member is tracked by its oneof, a plain field by itself (duplicates fall back).
        slot = field.containing_oneof.name if field.containing_oneof else field.name
        entry = (field.name, kind, detail, field.is_repeated, slot)
        spec[field.json_name] = entry
        spec[field.name] = entry
    return spec


def _scalar(kind: str, detail: Any, value: Any) -> Any:
    t = type(value)
    if kind == "string":
        if t is str:
            return value
    elif kind == "int":
        if t is str and value.lstrip("-").isdigit() and value.isascii():
            value = int(value)
        elif t is not int:
            raise _Fallback
        if detail[0] <= value <= detail[1]:
            return value
    elif kind == "double":
        if (t is float and math.isfinite(value)) or t is int:
            return float(value)  # json_format refuses bare NaN/Infinity numbers too
    elif kind == "bool":
        if t is bool:
            return value
    elif kind == "enum":
        if t is int and -(2**31) <= value < 2**31:
            return value
        if t is str and value in detail.values_by_name:
            return detail.values_by_name[value].number
    elif kind == "id" and t is str:
        raw = bytes.fromhex(value) if value.isascii() else b""
        if len(raw) * 2 == len(value):  # fromhex skips spaces; json_format would not see hex
            return raw
    raise _Fallback


def _fill(message: Any, doc: Any) -> None:
    if type(doc) is not dict:
        raise _Fallback
    spec = _spec(message.DESCRIPTOR)
    seen = set()
    for key, value in doc.items():
        entry = spec.get(key)
        if entry is None or value is None:
            raise _Fallback
        name, kind, detail, repeated, slot = entry
        if slot in seen:
            raise _Fallback
        seen.add(slot)
        if repeated:
            if type(value) is not list:
                raise _Fallback
            container = getattr(message, name)
            if kind == "keyvalues":
                _fill_attributes(container, value)
            elif kind == "message":
                for item in value:
                    _fill(container.add(), item)
            else:
                container.extend([_scalar(kind, detail, v) for v in value])
        elif kind == "message":
            sub = getattr(message, name)
            sub.SetInParent()
            _fill(sub, value)
        else:
            setattr(message, name, _scalar(kind, detail, value))


def _fill_attributes(container: Any, items: list[Any]) -> None:
    """Attributes are most of a request: {"key": k, "value": {"stringValue": v}} and the
    like go straight in; anything else through `_fill`."""
    for item in items:
        if type(item) is dict and len(item) == 2:
            key, value = item.get("key"), item.get("value")
            if type(key) is str and type(value) is dict and len(value) == 1:
                ((which, v),) = value.items()
                t = type(v)
                if which == "stringValue" and t is str:
                    container.add(key=key).value.string_value = v
                    continue
                if which == "intValue" and (t is int or t is str):
                    container.add(key=key).value.int_value = _scalar("int", _INT64, v)
                    continue
                if which == "boolValue" and t is bool:
                    container.add(key=key).value.bool_value = v
                    continue
                if which == "doubleValue" and (t is int or (t is float and math.isfinite(v))):
                    container.add(key=key).value.double_value = float(v)
                    continue
        _fill(container.add(), item)


def _fast(request_type: type[Message], doc: dict[str, Any]) -> bytes:
    """proto3 JSON -> protobuf for the plain subset OTLP senders use, without json_format's
    per-field overhead (~9x faster). Raises _Fallback for anything else (unknown keys, nulls,
    base64 bytes, numbers as strings for doubles, ...), which json_format then handles."""
    message = request_type()
    try:
        _fill(message, doc)
    except (_Fallback, ValueError, TypeError, OverflowError, RecursionError, SystemError) as exc:
        raise _Fallback from exc
    return message.SerializeToString()


def otlp_json_to_proto(kind: str, body: bytes) -> bytes:
    """An OTLP/HTTP JSON body of `kind` ("traces", "metrics", "logs") as protobuf bytes.

    Raises DecodeError naming the field and where it is when the body is not valid OTLP JSON.
    """
    request_type = REQUEST_TYPES.get(kind)
    if request_type is None:
        raise ValueError(f"unknown OTLP signal {kind!r}; expected one of {sorted(REQUEST_TYPES)}")
    try:
        doc = json.loads(body)
    except UnicodeDecodeError as exc:
        raise DecodeError(_kind(kind), f"body is not UTF-8: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise DecodeError(
            _kind(kind), f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    except RecursionError as exc:
        raise DecodeError(_kind(kind), "JSON nested too deeply") from exc
    if not isinstance(doc, dict):
        raise DecodeError(_kind(kind), f"body must be a JSON object, got {type(doc).__name__}")
    try:
        return _fast(request_type, doc)
    except _Fallback:
        return _general(request_type, doc, kind)


def _general(request_type: type[Message], doc: dict[str, Any], kind: str) -> bytes:
    """json_format's conversion (after turning hex ids into base64); raises DecodeError."""
    _fix_ids(doc, kind, request_type.DESCRIPTOR.name)
    message = request_type()
    try:
        json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise DecodeError(_kind(kind), str(exc)) from exc
    except (ValueError, TypeError, OverflowError, IndexError, RecursionError) as exc:
        raise DecodeError(_kind(kind), f"invalid value: {exc}") from exc
    except SystemError as exc:  # upb's name lookups fail so on text with a lone surrogate
        raise DecodeError(_kind(kind), f"invalid text: {exc.__cause__ or exc}") from exc
    return message.SerializeToString()
