"""Store footprint and maintenance times: bytes per span and per request on disk after
compaction, compaction time, and recovery time after a crash with N WAL segments pending.

    .venv/bin/python -m bench.store_size [--requests 120] [--als-messages 240]
                                          [--pending 4 16] [--dir /tmp/x]

Footprint: `--requests` distinct pre-serialized 1000-span OTLP requests (bench/decode_spans.py's
SDK shape, ~600 B/span on the wire) and `--als-messages` Envoy ALS messages of 100 Istio-like
HTTP entries (bench/ingest.py's shape: random request ids, paths, durations) appended to a real
Store (durability fsync, 1 decode worker, WAL segments of 4 MiB as a collector taking a few
MB/s writes them), converted, then compacted by `Store.maintain()`; bytes are the visible
Parquet files (what a query reads) divided by rows.

Recovery: N WAL segments of 32 such OTLP requests each (16-20 MiB) written as a crashed
collector leaves them, then `Store.start()` (the time until the collector can accept again)
and until every segment is in Parquet.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.decode_spans import sdk_request
from bench.ingest import ENTRIES_PER_MESSAGE as ALS_ENTRIES
from bench.ingest import als_payloads
from meshlens.collector.proto.gen.meshlens_als_pb2 import StreamAccessLogsMessage
from meshlens.collector.store import wal
from meshlens.collector.store.layout import visible_files, wal_segment_path
from meshlens.collector.store.records import Record, RecordKind
from meshlens.collector.store.store import Store, StoreOptions

SPANS = 1000
MiB = 1024 * 1024


def _bytes(files: list[Path]) -> int:
    return sum(f.stat().st_size for f in files)


def _all_parquet(data_dir: Path, table: str) -> list[Path]:
    return list((data_dir / table).rglob("*.parquet"))


def _options(**kw: object) -> StoreOptions:
    base: dict[str, object] = {
        "decode_workers": 1,
        "flush_interval": 0.5,
        "retention": 0.0,  # the payloads carry fixed, old timestamps
        "compact_after": 0.0,
        "compact_grace": 0.0,
        "maintenance_interval": 3600.0,  # compaction only when this benchmark calls it
        # ~4 MiB of requests per file: what a collector at a few MB/s writes per segment
        "segment_max_bytes": 4 * MiB,
    }
    base.update(kw)
    return StoreOptions(**base)  # type: ignore[arg-type]


def footprint(root: Path, requests: int, als_messages: int) -> list[tuple[str, str, str]]:
    data_dir = Path(tempfile.mkdtemp(dir=root, prefix="size-"))
    # every payload distinct (fresh ids, paths, durations), so compression sees real entropy
    spans = [sdk_request(seed, SPANS) for seed in range(requests)]
    first, als = als_payloads(max(1, als_messages))
    ident = StreamAccessLogsMessage.FromString(first).identifier.SerializeToString()
    wire_spans = sum(len(p) for p in spans) / (len(spans) * SPANS)
    wire_als = sum(len(p) for p in als) / (len(als) * ALS_ENTRIES)
    store = Store(data_dir, _options())
    store.start()
    t0 = time.perf_counter()
    for payload in spans:
        store.append(RecordKind.OTLP_TRACES, payload, items=SPANS)
    for payload in als[:als_messages]:
        store.append(RecordKind.ENVOY_ALS, payload, ident, items=ALS_ENTRIES)
    if not store.wait_converted(900):
        raise SystemExit("conversion did not finish in 900 s")
    ingest_s = time.perf_counter() - t0
    before = {
        t: (len(fs), _bytes(fs))
        for t in ("spans", "requests")
        for fs in [_all_parquet(data_dir, t)]
    }
    t1 = time.perf_counter()
    store.maintain(now=time.time())  # merge
    compact_s = time.perf_counter() - t1
    store.maintain(now=time.time() + 1)  # delete the merged inputs (grace 0)
    stats = store.stats()
    store.close()
    rows = {"spans": requests * SPANS, "requests": als_messages * ALS_ENTRIES}
    out: list[tuple[str, str, str]] = [
        ("spans on the wire (OTLP protobuf)", f"{wire_spans:.0f} B/span", ""),
        ("requests on the wire (ALS protobuf)", f"{wire_als:.0f} B/request", ""),
    ]
    for table, unit in (("spans", "span"), ("requests", "request")):
        vis = visible_files(data_dir, table)
        n = rows[table]
        if not n:
            continue
        files, size = before[table]
        out.append(
            (
                f"{table}: Parquet before compaction",
                f"{size / n:.1f} B/{unit}",
                f"{files} files, {size / 2**20:.1f} MiB",
            )
        )
        out.append(
            (
                f"{table}: Parquet after compaction",
                f"{_bytes(vis) / n:.1f} B/{unit}",
                f"{len(vis)} files, {_bytes(vis) / 2**20:.1f} MiB, {n:,} rows",
            )
        )
    out.append(
        (
            "compaction (merge all partitions)",
            f"{compact_s:.2f} s",
            f"{stats.files_compacted} files -> {stats.compactions} "
            f"({(sum(rows.values())) / max(compact_s, 1e-9):,.0f} rows/s)",
        )
    )
    out.append(
        (
            "append + convert (for reference)",
            f"{ingest_s:.1f} s",
            f"{requests} OTLP requests + {als_messages} ALS messages",
        )
    )
    return out


def recovery(root: Path, pending: int) -> tuple[float, float, int]:
    """(seconds until Store.start() returns, seconds until all converted, spans)."""
    data_dir = Path(tempfile.mkdtemp(dir=root, prefix="recover-"))
    payloads = [sdk_request(seed, SPANS) for seed in range(8)]
    for k in range(pending):
        path = wal_segment_path(data_dir, "local", k + 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        frames = (
            wal.frame_record(Record(RecordKind.OTLP_TRACES, time.time_ns(), payloads[i % 8]))
            for i in range(32)
        )
        torn = b"\x00\x01\x02" if k == pending - 1 else b""  # a torn tail, as after kill -9
        path.write_bytes(wal.MAGIC + b"".join(frames) + torn)
    store = Store(data_dir, _options())
    t0 = time.perf_counter()
    store.start()
    ready = time.perf_counter() - t0
    if not store.wait_converted(900):
        raise SystemExit("recovery did not finish in 900 s")
    done = time.perf_counter() - t0
    rows = store.stats().rows_written
    store.close()
    return ready, done, rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--requests", type=int, default=120, help="1000-span OTLP requests")
    p.add_argument("--als-messages", type=int, default=1000, help="100-entry ALS messages")
    p.add_argument(
        "--pending",
        type=int,
        nargs="+",
        default=[4, 16],
        help="WAL segments pending at restart (32 requests each)",
    )
    p.add_argument("--dir", type=Path, default=None, help="where to put the stores")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="meshlens-size-") as tmp:
        root = Path(tmp)
        rows = footprint(root, args.requests, args.als_messages)
        print(f"{'store footprint':<40} {'value':>16}  detail")
        for name, value, detail in rows:
            print(f"{name:<40} {value:>16}  {detail}")
        print()
        print(
            f"{'WAL segments pending':>20} {'spans':>10} {'start() s':>10} "
            f"{'all converted s':>16} {'spans/s':>10}"
        )
        for n in args.pending:
            ready, done, spans = recovery(root, n)
            print(f"{n:>20} {spans:>10,} {ready:>10.2f} {done:>16.1f} {spans / done:>10,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
