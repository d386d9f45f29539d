"""Repeated kill -9 of `meshlens serve` during sustained ingest and compaction (shared by the
short test in tests/reliability and the long one in tests/soak)."""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.collector.conftest import ServeProcess, wait_for
from tests.reliability.harness import (
    Ledger,
    assert_exactly_once,
    kill9,
    launch,
    metric,
    span_load,
)

# Maintenance every 0.3 s with a short grace: compaction (merge, then delete the inputs) runs
# nearly all the time, so random kills land inside it.
KNOBS = {"RELIABILITY_MAINTENANCE_S": "0.3", "RELIABILITY_COMPACT_GRACE_S": "0.5"}
SERVE_ARGS = ("--compact-after", "1s", "--log-level", "info")
_TMP = re.compile(r"^\.(?P<node>[a-z0-9-]+)_(?P<lo>\d+)_(?P<hi>\d+)\.parquet\.tmp")


@dataclass
class CrashReport:
    kills: int = 0
    kills_mid_merge: int = 0  # a compaction output was half-written at the kill
    kills_mid_convert: int = 0  # a WAL segment's Parquet file was half-written
    acked: int = 0
    restarts_s: list[float] = field(default_factory=list)
    merged_files: int = 0  # compaction outputs in the store at the end


def _drained(sp: ServeProcess) -> bool:
    return metric(sp, "meshlens_store_wal_bytes_pending") == 0


def _check(sp: ServeProcess, ledger: Ledger) -> None:
    """Every acknowledged span stored exactly once, read while the collector runs (compaction
    may delete inputs between listing and reading: retry then)."""
    wait_for(lambda: _drained(sp), 60, "WAL converted after restart", interval=0.1)
    for attempt in range(20):
        try:
            assert_exactly_once(sp.data_dir, ledger)
            return
        except OSError:
            time.sleep(0.2)
        except Exception as exc:  # duckdb.IOException is not an OSError
            if "No such file" not in str(exc) or attempt == 19:
                raise
            time.sleep(0.2)


def _half_written(data_dir: Path, before: set[str]) -> tuple[int, int]:
    """Temporary Parquet files that appeared during the round (left by the kill)."""
    merge = convert = 0
    for p in data_dir.glob("*/dt=*/hr=*/.*"):
        m = _TMP.match(p.name)
        if m and p.name not in before:
            if int(m["lo"]) < int(m["hi"]):
                merge += 1
            else:
                convert += 1
    return merge, convert


def crash_rounds(data_dir: Path, kills: int, seed: int | None = None) -> CrashReport:
    rng = random.Random(seed)
    ledger = Ledger()
    report = CrashReport()
    # Spans two hours old land in a partition whose hour is over: compaction merges its files
    # as soon as they are converted. Every third round sends current spans too.
    old_ts = time.time_ns() - 2 * 3600 * 10**9
    for round_ in range(kills + 1):
        t0 = time.monotonic()
        sp = launch(data_dir, *SERVE_ARGS, knobs=KNOBS)
        report.restarts_s.append(time.monotonic() - t0)
        try:
            _check(sp, ledger)  # after each restart: everything acknowledged so far, once
            if round_ == kills:
                break
            ts = None if round_ % 3 == 2 else old_ts
            before = {p.name for p in data_dir.glob("*/dt=*/hr=*/.*")}
            acked_before = len(ledger.acked)
            with span_load(sp.grpc_target, ledger, threads=2, ts_ns=ts):

                def acked_more(n: int = acked_before) -> bool:
                    return len(ledger.acked) > n

                wait_for(acked_more, 30, "first ack")
                time.sleep(rng.uniform(0.0, 2.0))
                kill9(sp)
            report.kills += 1
            merge, convert = _half_written(data_dir, before)
            report.kills_mid_merge += bool(merge)
            report.kills_mid_convert += bool(convert)
        except BaseException:
            print(sp.log()[-5000:])
            raise
        finally:
            if sp.proc.poll() is None:
                assert sp.stop() == 0, sp.log()[-5000:]
    assert sp.stop() == 0, sp.log()[-5000:]
    assert_exactly_once(data_dir, ledger)
    report.acked = len(ledger.acked)
    report.merged_files = sum(
        1
        for p in data_dir.glob("spans/dt=*/hr=*/*.parquet")
        if p.stem.split("_")[1] != p.stem.split("_")[2]
    )
    return report
