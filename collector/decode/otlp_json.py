"""OTLP/HTTP JSON bodies -> the equivalent protobuf bytes (then decoded like gRPC payloads).

Differences from protobuf's canonical JSON mapping that the OTLP spec asks for: trace and span
ids are hex strings (not base64); receivers ignore unknown fields. The rest is the proto3 JSON
mapping, which `google.protobuf.json_format` already implements: lowerCamelCase or original
field names, enums as names or integers, 64-bit integers as strings or numbers.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Final

from google.protobuf import json_format
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
    _fix_ids(doc, kind, request_type.DESCRIPTOR.name)
    message = request_type()
    try:
        json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise DecodeError(_kind(kind), str(exc)) from exc
    except (ValueError, TypeError, RecursionError) as exc:
        raise DecodeError(_kind(kind), f"invalid value: {exc}") from exc
    return message.SerializeToString()
