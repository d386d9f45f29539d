"""Shallow views of OTLP trace and log export requests, for fast decoding.

These messages have the field numbers and wire types of the real OTLP messages, but declare
attributes, resources, scopes and log bodies as `bytes`. upb then parses the request without
building a Python-visible object per attribute, and the decoder resolves each raw KeyValue
through `attributes.KeyValueCache` (most repeat byte for byte across spans). A `bytes` field
and a sub-message share wire type 2, so any valid OTLP payload parses here; the raw parts are
parsed with the real message classes when they are first needed, which also validates them.

Built from a descriptor at import time (no generated code, no clash with opentelemetry-proto:
they live in their own descriptor pool and package).
"""

from __future__ import annotations

from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_PKG: Final = "meshlens.otlpwire"

_T = {
    "bytes": _F.TYPE_BYTES,
    "string": _F.TYPE_STRING,
    "int32": _F.TYPE_INT32,  # enums on the wire; proto3 enums are open, int32 keeps unknown values
    "uint32": _F.TYPE_UINT32,
    "fixed32": _F.TYPE_FIXED32,
    "fixed64": _F.TYPE_FIXED64,
}

# message -> [(field, number, type or message name, repeated)]
_MESSAGES: Final[dict[str, list[tuple[str, int, str, bool]]]] = {
    "TracesRequest": [("resource_spans", 1, "ResourceSpans", True)],
    "ResourceSpans": [
        ("resource", 1, "bytes", False),
        ("scope_spans", 2, "ScopeSpans", True),
    ],
    "ScopeSpans": [("scope", 1, "Scope", False), ("spans", 2, "Span", True)],
    "Scope": [("name", 1, "string", False), ("version", 2, "string", False)],
    "Status": [("message", 2, "string", False), ("code", 3, "int32", False)],  # parsed on demand
    "Link": [("trace_id", 1, "bytes", False), ("span_id", 2, "bytes", False)],
    "Span": [
        ("trace_id", 1, "bytes", False),
        ("span_id", 2, "bytes", False),
        ("parent_span_id", 4, "bytes", False),
        ("name", 5, "string", False),
        ("kind", 6, "int32", False),
        ("start_time_unix_nano", 7, "fixed64", False),
        ("end_time_unix_nano", 8, "fixed64", False),
        ("attributes", 9, "bytes", True),
        ("links", 13, "Link", True),
        ("status", 15, "bytes", False),
    ],
    "LogsRequest": [("resource_logs", 1, "ResourceLogs", True)],
    "ResourceLogs": [("resource", 1, "bytes", False), ("scope_logs", 2, "ScopeLogs", True)],
    "ScopeLogs": [("scope", 1, "Scope", False), ("log_records", 2, "LogRecord", True)],
    "LogRecord": [
        ("time_unix_nano", 1, "fixed64", False),
        ("severity_number", 2, "int32", False),
        ("severity_text", 3, "string", False),
        ("body", 5, "bytes", False),
        ("attributes", 6, "bytes", True),
        ("trace_id", 9, "bytes", False),
        ("span_id", 10, "bytes", False),
        ("observed_time_unix_nano", 11, "fixed64", False),
    ],
}


def _build() -> dict[str, Any]:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="meshlens_otlpwire.proto", package=_PKG, syntax="proto3"
    )
    for name, fields in _MESSAGES.items():
        msg = fdp.message_type.add(name=name)
        for fname, number, typ, repeated in fields:
            field = msg.field.add(
                name=fname,
                number=number,
                label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
            )
            if typ in _T:
                field.type = _T[typ]
            else:
                field.type = _F.TYPE_MESSAGE
                field.type_name = f".{_PKG}.{typ}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PKG}.{name}"))
        for name in _MESSAGES
    }


_CLASSES: Final = _build()
TracesRequest: Final[Any] = _CLASSES["TracesRequest"]
Status: Final[Any] = _CLASSES["Status"]
LogsRequest: Final[Any] = _CLASSES["LogsRequest"]
