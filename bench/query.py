"""Benchmark: service graph and golden signals over 1M / 10M / 50M request rows.

    .venv/bin/python -m bench.query                 # 1M, 10M, 50M (datasets cached in .bench-data/)
    .venv/bin/python -m bench.query --rows 10M --repeat 5

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


def measure(data: str, what: str, repeat: int) -> dict[str, float]:
    """Run inside a subprocess: time `what` `repeat` times, report median and peak RSS."""
    from meshlens.analytics.catalog import connect
    from meshlens.analytics.graph import service_graph
    from meshlens.analytics.signals import golden_signals
    from meshlens.analytics.window import TimeWindow

    window = TimeWindow(START, datetime.fromtimestamp(START.timestamp() + 3600, tz=UTC))
    load0 = os.getloadavg()[0]
    times = []
    cpus = []
    size = 0
    for _ in range(repeat):
        t = time.perf_counter()
        c = time.process_time()
        conn = connect(Path(data), window)
        if what == "graph":
            g = service_graph(conn, window, level="workload")
            size = len(g.edges)
        else:
            df = golden_signals(conn, window, by=("service", "version"), step_s=60)
            size = df.height
        conn.close()
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "peak_mb": peak_mb,
        "size": size,
        "cpu_s": statistics.median(cpus),
        "load0": load0,
        "load": os.getloadavg()[0],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", nargs="*", default=["1M", "10M", "50M"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--_measure", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._measure:
        print(json.dumps(measure(args._measure[0], args._measure[1], args.repeat)))
        return 0
    header = (
        f"{'rows':>12} {'query':>8} {'median s':>9} {'min s':>7} {'cpu s':>6} "
        f"{'peak RSS MB':>12} {'out':>6} {'load':>11}"
    )
    results = []
    for text in args.rows:
        rows = parse_rows(text)
        data = dataset(rows)
        for what in ("graph", "signals"):
            out = subprocess.run(
                [
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
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(
                f"{rows:>12,} {what:>8} {r['median_s']:>9.3f} {r['min_s']:>7.3f} "
                f"{r['cpu_s']:>6.2f} {r['peak_mb']:>12.0f} {r['size']:>6} "
                f"{r['load0']:>5.1f}->{r['load']:<4.1f}"
            )
            print(results[-1], file=sys.stderr)
    print(header)
    print("\n".join(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
