"""Durable store throughput: group-commit appends of 1000-span OTLP requests, then conversion.

    .venv/bin/python bench/store_ingest.py [--requests 300] [--threads 1 4 16] [--workers 0 1 2]
                                           [--durability fsync] [--dir /tmp/x]

For each (threads, decode workers): N threads append pre-serialized ~600 KB
ExportTraceServiceRequests (1000 spans each, the bench/decode_spans.py SDK shape) to a fresh
store as fast as appends return; conversion to Parquet runs concurrently in the background.
Columns: append rate (requests/s, MB/s, spans/s) until the last append returned, mean records per
write+fsync (group commit), p50/p99 append latency, and the end-to-end rate until every span was
in Parquet (what the store can sustain when the disk budget holds ingest to conversion speed:
an append refused with Overloaded waits its retry hint and is retried, counted as "overloaded";
its latency includes the waits).

A second table times conversion alone (as after a restart with a WAL backlog): 16 MiB segments
converted by `convert_segment` in-thread (workers 0) or by 1..N warm worker processes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.decode_spans import sdk_request
from meshlens.collector.errors import Overloaded
from meshlens.collector.store import wal
from meshlens.collector.store.layout import wal_segment_path
from meshlens.collector.store.records import Record, RecordKind
from meshlens.collector.store.store import Store, StoreOptions
from meshlens.collector.store.wal_to_parquet import convert_segment, warm_up

SPANS = 1000


def run(
    root: Path, payloads: list[bytes], total: int, threads: int, workers: int, durability: str
) -> dict[str, float]:
    data_dir = Path(tempfile.mkdtemp(dir=root))
    store = Store(data_dir, StoreOptions(decode_workers=workers, durability=durability))
    store.start()
    lock = threading.Lock()
    next_i = 0
    latencies: list[float] = []
    overloaded = [0]

    def work() -> None:
        nonlocal next_i
        mine: list[float] = []
        while True:
            with lock:
                i = next_i
                next_i += 1
            if i >= total:
                break
            t = time.perf_counter()
            while True:
                try:
                    store.append(RecordKind.OTLP_TRACES, payloads[i % len(payloads)], items=SPANS)
                    break
                except Overloaded as exc:  # the disk budget holds appends to conversion speed:
                    with lock:  # wait the retry hint, as a receiver's client does
                        overloaded[0] += 1
                    time.sleep(exc.retry_after_s)
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    ts = [threading.Thread(target=work) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    t_append = time.perf_counter() - t0
    st = store.stats()
    if not store.wait_converted(600):
        raise SystemExit("conversion did not finish in 600 s")
    t_all = time.perf_counter() - t0
    done = store.stats()
    store.close()
    latencies.sort()
    mb = st.bytes_appended / 1e6
    return {
        "req/s": total / t_append,
        "MB/s": mb / t_append,
        "spans/s": total * SPANS / t_append,
        "rec/fsync": st.records_appended / max(1, st.batches_written),
        "p50 ms": 1000 * latencies[len(latencies) // 2],
        "p99 ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "e2e spans/s": done.rows_written / t_all,
        "rows": done.rows_written,
        "overloaded": overloaded[0],
    }


def convert_only(root: Path, payloads: list[bytes], total: int, workers: int) -> float:
    """Spans/s converting `total` requests already in the WAL (32 per segment)."""
    data_dir = Path(tempfile.mkdtemp(dir=root))
    segs = []
    for k in range(0, total, 32):
        path = wal_segment_path(data_dir, "bench", k + 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        n = min(32, total - k)
        frames = (
            wal.frame_record(Record(RecordKind.OTLP_TRACES, time.time_ns(), payloads[i % 8]))
            for i in range(n)
        )
        path.write_bytes(wal.MAGIC + b"".join(frames))
        segs.append((k + 1, path))
    args = [(str(data_dir), "bench", seq, str(p)) for seq, p in segs]
    if workers == 0:
        warm_up({})
        t0 = time.perf_counter()
        rows = sum(sum(convert_segment(*a).rows.values()) for a in args)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            list(pool.map(warm_up, [{}] * workers))
            t0 = time.perf_counter()
            rows = sum(
                sum(r.rows.values()) for r in pool.map(convert_segment, *zip(*args, strict=True))
            )
    elapsed = time.perf_counter() - t0
    assert rows == total * SPANS, rows
    return rows / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--durability", choices=("fsync", "none"), default="fsync")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the stores")
    args = parser.parse_args()
    payloads = [sdk_request(seed, SPANS) for seed in range(8)]
    size = sum(map(len, payloads)) / len(payloads)
    print(
        f"payload: {SPANS} spans, {size / 1024:.0f} KiB; {args.requests} requests per run; "
        f"durability={args.durability}"
    )
    cols = ["req/s", "MB/s", "spans/s", "rec/fsync", "p50 ms", "p99 ms", "e2e spans/s"]
    cols.append("overloaded")
    print(f"{'threads':>7} {'workers':>7} " + " ".join(f"{c:>11}" for c in cols))
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        for threads in args.threads:
            for workers in args.workers:
                r = run(Path(root), payloads, args.requests, threads, workers, args.durability)
                assert r["rows"] == args.requests * SPANS, r
                print(
                    f"{threads:>7} {workers:>7} " + " ".join(f"{r[c]:>11,.1f}" for c in cols),
                    flush=True,
                )
        print(f"\nconversion only ({args.requests} requests in 16 MiB segments)")
        print(f"{'workers':>7} {'spans/s':>11}")
        for workers in args.workers:
            rate = convert_only(Path(root), payloads, args.requests, workers)
            print(f"{workers:>7} {rate:>11,.0f}", flush=True)


if __name__ == "__main__":
    main()
