"""Time to first data of each Streamlit page's loaders on a large store (cold cache).

    .venv/bin/python bench/dashboard.py [--rows 10000000] [--hours 6] [--data-dir .bench-data/ui]

Writes `--rows` synthetic bookinfo requests spread over the last `--hours` (skipped when the
directory already holds them), then calls every dashboards.data loader a page needs for the
default 15-minute window and for a 1-hour window, cache cleared, and prints one row per loader.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meshlens.analytics.paired_store import store_settled_hours
from meshlens.collector.store.layout import visible_files
from meshlens.collector.store.parquet_write import write_table
from meshlens.dashboards import data
from meshlens.synth import synthetic_requests

CHUNK = 1_000_000


def ensure_store(ddir: Path, rows: int, hours: float, *, store_pairing: bool = True) -> None:
    """Seed the store once; then, as the collector's maintenance would, store its settled
    hours paired (hours still being written stay paired live, as in production)."""
    if not visible_files(ddir, "requests"):
        _seed(ddir, rows, hours)
    if not store_pairing:
        return
    t0 = time.perf_counter()
    stored = store_settled_hours(ddir, now=time.time(), settle=120.0)
    if stored:
        print(f"stored {stored} settled hour(s) paired in {time.perf_counter() - t0:.1f}s")


def _seed(ddir: Path, rows: int, hours: float) -> None:
    now = datetime.now(UTC)
    start = now - timedelta(hours=hours)
    chunks = max(1, rows // CHUNK)
    span_s = hours * 3600 / chunks
    for i in range(chunks):
        # synthetic_requests fills [start, start + duration): chunks tile the hours, none runs
        # into the future.
        t = synthetic_requests(
            min(CHUNK, rows - i * CHUNK),
            seed=i,
            start=start + timedelta(seconds=i * span_s),
            duration_s=span_s,
        )
        write_table(ddir, "requests", t, node="bench", lo=i + 1, fsync=False)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> int:
    logging.getLogger("streamlit").setLevel(logging.ERROR)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--hours", type=float, default=6.0)
    ap.add_argument("--data-dir", type=Path, default=Path(".bench-data/ui"))
    args = ap.parse_args()
    t_seed, _ = timed(lambda: ensure_store(args.data_dir, args.rows, args.hours))
    ddir = str(args.data_dir)
    print(f"store: {args.data_dir} ({args.rows:,} rows requested, seeding {t_seed:.1f}s)")
    print(f"{'page':10} {'loader':18} {'window':>6} {'seconds':>8} {'rows':>7}")
    for label, seconds in (("15m", 900), ("1h", 3600)):
        w = data.Window.ending(datetime.now(UTC), seconds)
        loaders: list[tuple[str, str, Callable[[], Any]]] = [
            ("mesh", "time_extent", lambda: data.time_extent(ddir)),
            ("mesh", "service_graph", lambda w=w: data.service_graph(ddir, w, "workload", None)),
            ("service", "services", lambda w=w: data.services(ddir, w)),
            (
                "service",
                "golden_signals",
                lambda w=w, s=seconds: data.golden_signals(ddir, w, "reviews", max(10, s // 60)),
            ),
            ("service", "inbound", lambda w=w: data.inbound(ddir, w, "reviews")),
            ("service", "outbound", lambda w=w: data.outbound(ddir, w, "productpage")),
            ("service", "codes_by_flags", lambda w=w: data.codes_by_flags(ddir, w, "reviews")),
            (
                "traces",
                "search_requests",
                lambda w=w: data.search_requests(ddir, w, status="5xx", min_ms=10),
            ),
            (
                "sql",
                "run_sql",
                lambda w=w: data.run_sql(
                    ddir,
                    "SELECT destination_canonical_service, count(*) FROM requests "
                    "GROUP BY 1 ORDER BY 2 DESC",
                    100,
                    w,
                ),
            ),
        ]
        for page, name, fn in loaders:
            getattr(data, name).clear()
            try:
                secs, out = timed(fn)
            except ImportError as exc:  # a loader whose analytics module is not there yet
                print(f"{page:10} {name:18} {label:>6} {'n/a':>8} {exc}")
                continue
            n = len(out) if hasattr(out, "__len__") else 1
            if isinstance(out, data.SqlOutcome):
                n = len(out.frame) if out.frame is not None else 0
            if isinstance(out, dict):
                n = len(out.get("edges", []))
            print(f"{page:10} {name:18} {label:>6} {secs:8.3f} {n:7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
