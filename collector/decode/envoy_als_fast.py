"""Envoy ALS records -> one `requests` table per batch, with the C wire decoder when it is built.

`collector.decode._als_wire` (C, built by `pip install -e .`) walks many
`StreamAccessLogsMessage`s in one call and returns Arrow-ready column buffers: no Python object
per entry. Identity stays in Python: the C side groups entries by their identity facts and
`envoy_als._Identities` resolves each distinct group once, from that group's first entry, so the
rules live in one place (`collector.decode.identity`).

`collector.decode.envoy_als` is the reference and the fallback: when the extension is missing, or
declines a batch (malformed or unusual wire data, see the C file's header), the batch is decoded
there, which gives the same rows or the precise DecodeError. tests/collector/decode/
test_envoy_als_fast.py holds the two to identical tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf.message import DecodeError as ProtoDecodeError

from meshlens.collector.decode import envoy_als, identity, window
from meshlens.collector.decode.request_rows import IDENTITY_COLUMNS as NORMALIZED
from meshlens.collector.errors import DecodeError
from meshlens.collector.proto.gen import meshlens_envoy_accesslog_pb2 as accesslog_pb2
from meshlens.collector.store.records import Record
from meshlens.collector.store.schema import REQUESTS, UNKNOWN

_wire: ModuleType | None
try:
    from meshlens.collector.decode import _als_wire

    _wire = _als_wire
except ImportError:  # not built (no C compiler at install time): Python decodes everything
    _wire = None

AVAILABLE: Final = _wire is not None

_PROTOCOLS: Final = pa.array(["http", "grpc", "tcp"], pa.string())
_METHOD_NAMES: Final = pa.array([None, *(envoy_als._METHODS[i] for i in range(1, 10))], pa.string())
_STRING_COLUMNS: Final = (
    "response_flags",
    "upstream_cluster",
    "source_address",
    "connection_termination_details",
    "path",
    "authority",
    "grpc_status",
    "request_id",
    "trace_id",
    "user_agent",
    "response_code_details",
)
_FIXED: Final = {
    "duration_ms": pa.float64(),
    "response_code": pa.int32(),
    "request_bytes": pa.int64(),
    "response_bytes": pa.int64(),
}


def record_part(record: Record) -> Record:
    """First step of the two-step decoder (registry.BATCH_DECODERS): all work is batched."""
    return record


def records_tables(records: Sequence[Record]) -> dict[str, pa.Table]:
    """Many ALS records -> {"requests": table}, rows in record order. Raises DecodeError for
    a batch holding a record that does not decode (the converter then decodes one by one)."""
    fast = _fast_table(records) if AVAILABLE else None
    if fast is None:
        parts = [envoy_als.als_record_columns(r) for r in records]
        table = envoy_als.als_columns_tables(parts)["requests"]
        per_record: Any = [len(next(iter(p.values()), ())) for p in parts]
    else:
        table, per_record = fast
    # The live-ingest timestamp window, around each row's own record's receipt time.
    received = np.repeat(np.array([r.received_ns // 1000 for r in records], np.int64), per_record)
    return {"requests": window.apply_table("requests", table, received)}


def _identifier_key(record: Record) -> bytes | None:
    """The stream Identifier a record's rows take their local workload from: its context,
    else the message's own identifier (None: neither)."""
    if record.context:
        return record.context
    msg = envoy_als.Message()
    try:
        msg.ParseFromString(record.payload)
    except ProtoDecodeError as exc:
        raise DecodeError("envoy ALS message", str(exc)) from None
    return msg.identifier.SerializeToString() if msg.HasField("identifier") else None


def _local(key: bytes | None) -> tuple[str, identity.Workload]:
    if key is None:
        return "", identity.UNKNOWN_WORKLOAD
    ident = envoy_als.Identifier()
    try:
        ident.ParseFromString(key)
    except ProtoDecodeError as exc:
        raise DecodeError("envoy ALS stream identifier", str(exc)) from None
    return envoy_als.local_workload(ident)


def _buffers(col: tuple[bytes | None, bytes | None, bytes, int]) -> list[pa.Buffer | None]:
    validity, offsets, data, _nulls = col
    bufs: list[pa.Buffer | None] = [None if validity is None else pa.py_buffer(validity)]
    if offsets is not None:
        bufs.append(pa.py_buffer(offsets))
    bufs.append(pa.py_buffer(data))
    return bufs


def _array(col: tuple[bytes | None, bytes | None, bytes, int], typ: pa.DataType, n: int) -> Any:
    return pa.Array.from_buffers(typ, n, _buffers(col), null_count=col[3])


def _resolve(
    records: Sequence[Record], distinct: list[tuple[int, int, int, int]], idents: list[Any]
) -> list[tuple[tuple[Any, ...], int | None]]:
    """Identity of each distinct key, from the first entry that had it."""
    out = []
    for rec, kind, off, length in distinct:
        raw = records[rec].payload[off : off + length]
        ids = idents[rec]
        if kind == 0:
            out.append(ids.of_http(accesslog_pb2.HTTPAccessLogEntry.FromString(raw)))
        else:
            out.append(ids.of_tcp(accesslog_pb2.TCPAccessLogEntry.FromString(raw)))
    return out


def fast_table(records: Sequence[Record]) -> pa.Table | None:
    """The C path; None when the extension declines the batch (or is not built)."""
    fast = _fast_table(records)
    return None if fast is None else fast[0]


def _fast_table(records: Sequence[Record]) -> tuple[pa.Table, Any] | None:
    """`fast_table` and the number of rows of each record (an int64 array)."""
    if _wire is None:
        return None
    local_ids: dict[bytes | None, int] = {}
    locals_: list[tuple[str, identity.Workload]] = []
    lids: list[int] = []
    for record in records:
        key = _identifier_key(record)
        lid = local_ids.get(key)
        if lid is None:
            lid = local_ids[key] = len(locals_)
            locals_.append(_local(key))
        lids.append(lid)
    out = _wire.decode([r.payload for r in records], lids, [r.received_ns // 1000 for r in records])
    if out is None:
        return None
    n: int = out["rows"]
    per_lid = [envoy_als._Identities(local) for _node, local in locals_]
    try:
        resolved = _resolve(records, out["distinct"], [per_lid[lid] for lid in lids])
    except ProtoDecodeError:
        # A field the C side does not read is malformed (e.g. bad UTF-8): the reference
        # decoder reports it precisely.
        return None

    ident_idx = _array(out["ident"], pa.int32(), n)
    cols: dict[str, Any] = {}
    for j, name in enumerate(envoy_als.IDENTITY_COLUMNS):
        values = [r[0][j] for r in resolved]
        if name in NORMALIZED:
            values = [UNKNOWN if v is None or v == "" else v for v in values]
        cols[name] = pc.take(pa.array(values, REQUESTS.field(name).type), ident_idx)
    ident_port = pc.take(pa.array([r[1] for r in resolved], pa.int32()), ident_idx)
    cols["destination_port"] = pc.coalesce(ident_port, _array(out["local_port"], pa.int32(), n))
    cols["ts"] = _array(out["ts"], pa.int64(), n).cast(REQUESTS.field("ts").type)
    cols["protocol"] = pc.take(_PROTOCOLS, _array(out["protocol"], pa.int8(), n))
    cols["method"] = pc.take(_METHOD_NAMES, _array(out["method"], pa.int8(), n))
    for name, typ in _FIXED.items():
        cols[name] = _array(out[name], typ, n)
    for name in _STRING_COLUMNS:
        cols[name] = _array(out[name], pa.string(), n)

    per_record = np.frombuffer(out["rows_per_record"], np.int64)
    record_of_row = pa.array(np.repeat(np.arange(len(records), dtype=np.int32), per_record))
    nodes = [locals_[lid][0] or UNKNOWN for lid in lids]
    cols["node_id"] = pc.take(pa.array(nodes, pa.string()), record_of_row)
    cols["origin"] = pc.take(
        pa.array([envoy_als.ORIGIN], pa.string()), pa.array(np.zeros(n, np.int32))
    )
    return pa.Table.from_arrays([cols[f.name] for f in REQUESTS], schema=REQUESTS), per_record
