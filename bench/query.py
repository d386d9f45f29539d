"""Benchmark: service graph and golden signals over 1M / 10M (/ 50M) request rows, beside a
floor and a peer measured in the same run over the same Parquet files.

    .venv/bin/python -m bench.query                 # 1M and 10M (datasets cached in .bench-data/)
    .venv/bin/python -m bench.query --rows 50M      # pairs its hour first (2.5 GB RSS at 10M)
    .venv/bin/python -m bench.query --rows 10M --repeat 5 --cpus 2 1

Floor: ONE DuckDB group-by (source x destination workload: count and exact p50/p95/p99,
quantile_cont) over the raw files: the least any graph over these rows can cost in DuckDB.
Peer: the same group-by in ClickHouse (chdb, quantilesExactInclusive = the same interpolation),
when chdb is installed. Every figure is also shown as a ratio to the floor and to the peer of the
same size and core count, and each row is run pinned to 2 and 1 cores (taskset).

Each dataset is synthetic bookinfo traffic (meshlens.synth) over one hour, written through
collector.store.parquet_write.write_table in 1M-row files, generated once and reused. For every
size it prints the median wall time of a full graph (workload level, all edge statistics) and of the
golden signals (per service and version, 60 s steps), the median CPU seconds of the process
(all DuckDB threads; wall ~= cpu / cores on an idle machine), its peak RSS and the 1-minute
load average before -> after (other work on the machine inflates wall time), in a table.
Each measurement runs in a fresh subprocess so peak memory is per query.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".bench-data"
START = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
CHUNK = 1_000_000


def parse_rows(text: str) -> int:
    text = text.strip().upper()
    mult = {"K": 1_000, "M": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("KM")) * mult)


def dataset(rows: int) -> Path:
    """The cached store for `rows` rows, generated when missing."""
    from meshlens.collector.store.parquet_write import write_table
    from meshlens.synth import synthetic_requests

    data = CACHE / f"requests-{rows}"
    done = data / "COMPLETE"
    if done.exists():
        return data
    shutil.rmtree(data, ignore_errors=True)  # a half-written dataset from an interrupted run
    t = time.perf_counter()
    chunks = (rows + CHUNK - 1) // CHUNK
    for i in range(chunks):
        n = min(CHUNK, rows - i * CHUNK)
        # Each chunk is one slice of the hour, so partitions and files look like real ingest.
        start = datetime.fromtimestamp(START.timestamp() + i * 3600 / chunks, tz=UTC)
        table = synthetic_requests(n, start=start, duration_s=3600 / chunks, seed=i)
        write_table(data, "requests", table, "synth", i + 1, fsync=False)
        print(f"  generated {min((i + 1) * CHUNK, rows):,} / {rows:,} rows", file=sys.stderr)
    done.write_text(str(rows))
    print(f"  dataset {rows:,} rows in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    return data


def store_pairing(data: Path) -> str:
    """What the collector's maintenance does once an hour has settled: pair its reports and
    store them (analytics/paired_store.py). Returns a line saying what it cost (nothing when
    the hour is stored already and current)."""
    from meshlens.analytics.paired_store import store_settled_hours

    t = time.perf_counter()
    c = time.process_time()
    stored = store_settled_hours(data, now=time.time(), settle=0.0)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if not stored:
        return f"{data.name}: paired hours already stored and current"
    return (
        f"{data.name}: pairing and storing {stored} hour(s) (the collector's maintenance, once "
        f"per settled hour): {wall:.1f} s wall, {time.process_time() - c:.1f} s CPU in this "
        f"process, peak RSS {peak:.0f} MB"
    )


QUERIES = ("graph", "signals", "floor", "chdb")


def _parquet_files(data: str) -> list[str]:
    return sorted(str(p) for p in (Path(data) / "requests").rglob("*.parquet"))


def floor_sql(files: list[str]) -> str:
    """The floor: one DuckDB group-by with exact quantiles over the raw files."""
    listing = ", ".join("'" + f + "'" for f in files)
    return (
        "SELECT source_workload, destination_workload, count(*) AS n, "
        "quantile_cont(duration_ms, [0.5, 0.95, 0.99]) AS q "
        f"FROM read_parquet([{listing}]) GROUP BY ALL"
    )


def chdb_sql(data: str) -> str:
    """The peer: the same group-by in ClickHouse (chdb) over the same files."""
    return (
        "SELECT source_workload, destination_workload, count() AS n, "
        "quantilesExactInclusive(0.5, 0.95, 0.99)(duration_ms) AS q "
        f"FROM file('{Path(data).resolve()}/requests/*/*/*.parquet', Parquet) "
        "GROUP BY source_workload, destination_workload"
    )


def chdb_available() -> bool:
    try:
        import chdb  # noqa: F401
    except ImportError:
        return False
    return True


def run_once(data: str, what: str) -> int:
    """One query; returns the size of its answer."""
    from meshlens.analytics.catalog import connect
    from meshlens.analytics.graph import service_graph
    from meshlens.analytics.signals import golden_signals
    from meshlens.analytics.window import TimeWindow

    window = TimeWindow(START, datetime.fromtimestamp(START.timestamp() + 3600, tz=UTC))
    if what == "floor":
        import duckdb

        with duckdb.connect(":memory:") as c:
            return len(c.sql(floor_sql(_parquet_files(data))).fetchall())
    if what == "chdb":
        import chdb

        return len(str(chdb.query(chdb_sql(data), "CSV")).splitlines())
    conn = connect(Path(data), window)
    try:
        if what == "graph":
            return len(service_graph(conn, window, level="workload").edges)
        return golden_signals(conn, window, by=("service", "version"), step_s=60).height
    finally:
        conn.close()


def measure(data: str, what: str, repeat: int) -> dict[str, float]:
    """Run inside a subprocess: time `what` `repeat` times, report median and peak RSS."""
    load0 = os.getloadavg()[0]
    times = []
    cpus = []
    size = 0
    for _ in range(repeat):
        t = time.perf_counter()
        c = time.process_time()
        size = run_once(data, what)
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "peak_mb": peak_mb,
        "size": size,
        "cpu_s": statistics.median(cpus),
        "load0": load0,
        "load": os.getloadavg()[0],
    }


def _pinned(cpus: int) -> list[str]:
    """taskset prefix pinning a child to `cpus` cores (none when taskset or cores are missing)."""
    if shutil.which("taskset") is None or cpus > (os.cpu_count() or 1):
        return []
    return ["taskset", "-c", ",".join(str(i) for i in range(cpus))]


def _loads() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", nargs="*", default=["1M", "10M"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cpus", type=int, nargs="*", default=[2, 1])
    ap.add_argument("--_measure", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--_pair", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._pair:
        print(store_pairing(Path(args._pair)))
        return 0
    if args._measure:
        print(json.dumps(measure(args._measure[0], args._measure[1], args.repeat)))
        return 0
    queries = [q for q in QUERIES if q != "chdb" or chdb_available()]
    start_loads = _loads()
    header = (
        f"{'rows':>12} {'cpus':>4} {'query':>8} {'median s':>9} {'min s':>7} {'max s':>7} "
        f"{'cpu s':>6} {'peak RSS MB':>12} {'out':>5} {'x floor':>8} {'x chdb':>7} {'load':>11}"
    )
    results = []
    pairing = []
    for text in args.rows:
        rows = parse_rows(text)
        data = dataset(rows)
        # In a child: peak RSS survives exec on Linux, and the measuring children are ours.
        pairing.append(
            subprocess.run(
                [sys.executable, "-m", "bench.query", "--_pair", str(data)],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
        print(pairing[-1], file=sys.stderr)
        for cpus in args.cpus:
            got: dict[str, dict[str, float]] = {}
            for what in queries:
                out = subprocess.run(
                    [
                        *_pinned(cpus),
                        sys.executable,
                        "-m",
                        "bench.query",
                        "--repeat",
                        str(args.repeat),
                        "--_measure",
                        str(data),
                        what,
                    ],
                    cwd=ROOT,
                    check=True,
                    capture_output=True,
                    text=True,
                )
                got[what] = json.loads(out.stdout.strip().splitlines()[-1])
            for what, r in got.items():
                ratios = [
                    f"{r['median_s'] / got[p]['median_s']:.2f}x" if p in got else "-"
                    for p in ("floor", "chdb")
                ]
                results.append(
                    f"{rows:>12,} {cpus:>4} {what:>8} {r['median_s']:>9.3f} {r['min_s']:>7.3f} "
                    f"{r['max_s']:>7.3f} {r['cpu_s']:>6.2f} {r['peak_mb']:>12.0f} "
                    f"{r['size']:>5} {ratios[0]:>8} {ratios[1]:>7} "
                    f"{r['load0']:>5.1f}->{r['load']:<4.1f}"
                )
                print(results[-1], file=sys.stderr)
    print(
        f"load average (1/5/15 min) at start: {start_loads}; at end: {_loads()} "
        f"({os.cpu_count()} cores; other processes on the machine distort wall times)"
    )
    print(
        "floor: one DuckDB group-by (workload pair: count, exact p50/p95/p99) over the same "
        "files; chdb: the same group-by in ClickHouse (chdb)"
        + ("" if chdb_available() else ": not installed, left out")
        + "; ratios are median over median in the same run, size and core count"
    )
    print(
        "graph and signals read the `traffic` view: hours stored paired by maintenance (below); "
        "floor and chdb read the raw reports"
    )
    print("\n".join(pairing))
    print(header)
    print("\n".join(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
