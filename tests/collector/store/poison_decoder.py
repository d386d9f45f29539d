"""Decoders for dead-letter tests: payloads that make a whole segment fail, every time.

`b"crash-always"` kills the decoding process (a segfault or OOM kill, as the pool sees it);
`b"null-ts"` yields a row without a time, which `write_table` refuses (the segment fails, not
one record). Anything else decodes as `fake_decoder.decode` does.
"""

from __future__ import annotations

import os

import pyarrow as pa

from meshlens.collector.store.records import Record
from tests.collector.store import fake_decoder

SPEC = "tests.collector.store.poison_decoder:decode"
DECODERS = ((int(fake_decoder.KIND), SPEC),)


def decode(record: Record) -> dict[str, pa.Table]:
    if record.payload == b"crash-always":
        os._exit(3)
    if record.payload == b"null-ts":
        return {
            "logs": pa.table(
                {
                    "ts": pa.nulls(1, pa.timestamp("us", tz="UTC")),
                    "body": pa.array(["null-ts"], pa.string()),
                }
            )
        }
    return fake_decoder.decode(record)
