"""A collector's shipper in a child process, for the scale-out tests: it ships a data directory
to the shared store's Delta tables and can SIGKILL itself at a chosen point of a commit.

    python -m tests.collector.store.ship_child DATA NODE BUCKET PREFIX ENDPOINT
        [--append ROUNDS --seq SEQ --rows N --start ISO]   write a segment, ship; ROUNDS times
        [--kill before_commit|after_commit]                die at the first commit
        [--compact]                                        compact the node's files first
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from meshlens.collector.store import compaction  # noqa: E402
from meshlens.collector.store import objectstore as ob  # noqa: E402
from meshlens.collector.store.delta_table import storage_options  # noqa: E402
from meshlens.collector.store.location import StoreUrl  # noqa: E402
from meshlens.collector.store.parquet_write import write_table  # noqa: E402
from tests.collector.store.s3server import S3Server  # noqa: E402


def spans(node: str, seq: int, rows: int, start: datetime) -> pa.Table:
    """`rows` spans with ids `<node>-<seq>-<i>`, spread over two hours from `start`."""
    step = timedelta(seconds=7200 / max(rows, 1))
    return pa.table(
        {
            "trace_id": [f"{node}-{seq}-{i}" for i in range(rows)],
            "span_id": [f"{node}-{seq}-{i}" for i in range(rows)],
            "name": ["op"] * rows,
            "start_ts": pa.array(
                [start + i * step for i in range(rows)], pa.timestamp("us", tz="UTC")
            ),
        }
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    for name in ("data", "node", "bucket", "prefix", "endpoint"):
        ap.add_argument(name)
    ap.add_argument("--append", type=int, default=0)
    ap.add_argument("--seq", type=int, default=1)
    ap.add_argument("--rows", type=int, default=40)
    ap.add_argument("--start", default="")
    ap.add_argument("--kill", choices=("before_commit", "after_commit"), default=None)
    ap.add_argument("--compact", action="store_true")
    a = ap.parse_args()
    data = Path(a.data)
    s3 = S3Server(a.endpoint)
    if a.compact:
        compaction.compact_node(
            data, a.node, now=time.time() + 7200, compact_after=0, below_seq=10**15, grace=3600
        )
    if a.kill:
        real = ob.commit

        def commit(*args: Any, **kw: Any) -> None:
            if a.kill == "before_commit":  # the files are uploaded, the commit not written
                os.kill(os.getpid(), signal.SIGKILL)
            real(*args, **kw)
            os.kill(os.getpid(), signal.SIGKILL)  # the commit is in the log; we never knew

        ob.commit = commit  # type: ignore[assignment]
    shipper = ob.Shipper(
        data, a.node, StoreUrl(a.bucket, a.prefix), s3.fs(), options=storage_options(s3.options)
    )
    if not a.append:
        result = shipper.ship_once()
        return 1 if result.errors else 0
    start = datetime.fromisoformat(a.start)
    for seq in range(a.seq, a.seq + a.append):
        write_table(data, "spans", spans(a.node, seq, a.rows, start), a.node, seq)
        shipper.ship_once()
    return 1 if shipper.stats().errors else 0


if __name__ == "__main__":
    sys.exit(main())
