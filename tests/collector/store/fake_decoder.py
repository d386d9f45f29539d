"""A trivial decoder for store tests (the real decoders belong to other modules).

Payload `b"<id>[,<id>...][@<ts_us>][#padding]"` -> one `logs` row per id (body = id, ts = the
given time or the record's receive time). A payload starting with b"bad" raises DecodeError.
`b"crash-once:<path>"` kills the decoding process the first time (creating <path>), then
decodes as id "crashed".
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from meshlens.collector.errors import DecodeError
from meshlens.collector.store.records import Record, RecordKind

SPEC = "tests.collector.store.fake_decoder:decode"
KIND = RecordKind.ACCESS_LOG_LINES
DECODERS = ((int(KIND), SPEC),)


def decode(record: Record) -> dict[str, pa.Table]:
    if record.payload.startswith(b"crash-once:"):
        marker = Path(record.payload.split(b":", 1)[1].decode())
        if not marker.exists():
            marker.write_text("crashed")
            os._exit(3)  # what a segfault or OOM kill looks like to the pool
        return decode(Record(record.kind, record.received_ns, b"crashed"))
    if record.payload.startswith(b"bad"):
        raise DecodeError("test", "bad payload")
    text = record.payload.split(b"#", 1)[0].decode()
    ids_text, _, ts_text = text.partition("@")
    ids = ids_text.split(",")
    ts_us = int(ts_text) if ts_text else record.received_ns // 1000
    n = len(ids)
    ts = pa.array([ts_us] * n, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return {
        "logs": pa.table(
            {
                "ts": ts,
                "body": pa.array(ids, pa.string()),
                "service_name": pa.array(["test"] * n, pa.string()),
            }
        )
    }


LENIENT = ((int(KIND), "tests.collector.store.fake_decoder:decode_lenient"),)


def decode_lenient(record: Record) -> dict[str, pa.Table]:
    """The "fixed" decoder: accepts what `decode` rejects."""
    if record.payload.startswith(b"bad"):
        return decode(
            Record(record.kind, record.received_ns, record.payload.replace(b"bad", b"ok"))
        )
    return decode(record)
