"""Scale-out on the shared Delta tables, against a real S3 server (moto) and two independent
readers: three collectors' shippers (child processes) append to the same table at once; one is
killed with SIGKILL before and after a commit, and before and after a compaction commit, and one
at a random moment; a reader runs throughout. Every row of every collector's local store must be
in the table exactly once, as we count it and as ClickHouse (chdb) counts it, and no reader may
ever see a row twice or a row that no collector wrote."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from meshlens.analytics.catalog import connect
from meshlens.collector.store.layout import list_table_files, visible
from meshlens.collector.store.location import StoreUrl
from tests.collector.conftest import REPO, _serve_env
from tests.collector.store.delta_readers import clickhouse_counts, our_files, our_ids
from tests.collector.store.s3server import S3Server, s3_server

START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
ROWS = 40


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


def _child(
    s3: S3Server, url: StoreUrl, data: Path, node: str, *args: str
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "tests.collector.store.ship_child", str(data), node]
    cmd += [url.bucket, url.prefix, s3.endpoint_url, "--start", START.isoformat(), *args]
    return subprocess.Popen(
        cmd, cwd=REPO, env=_serve_env(s3.env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def _run(proc: subprocess.Popen[bytes], expect: int = 0) -> None:
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == expect, out.decode(errors="replace")[-3000:]


def _local_ids(data: Path, node: str) -> list[str]:
    """What the collector's local store holds: it must all reach the table, once."""
    ids: list[str] = []
    for seg in visible(list_table_files(data, "spans")):
        if seg.node == node:
            ids.extend(pq.read_table(seg.path, columns=["span_id"]).column(0).to_pylist())
    return ids


class Reader(threading.Thread):
    """Reads the table over and over while the collectors work: every snapshot must hold each
    row at most once, only rows some collector wrote, and never fewer rows than before (no
    commit here removes rows: compaction rearranges them)."""

    def __init__(self, s3: S3Server, url: StoreUrl) -> None:
        super().__init__(daemon=True)
        self.s3, self.url = s3, url
        self.stop = threading.Event()
        self.reads = 0
        self.clickhouse_reads = 0
        self.problems: list[str] = []
        self.seen_max = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                ids = our_ids(self.s3, self.url)
                if not ids:  # no table yet (ClickHouse would fail on an empty log)
                    continue
                n, distinct = (len(ids), len(set(ids)))
                if self.reads % 3 == 0:
                    n, distinct = clickhouse_counts(self.s3, self.url)
                    self.clickhouse_reads += 1
            except Exception as exc:  # a read failing is a finding too
                self.problems.append(f"read failed: {exc!r}")
                continue
            self.reads += 1
            if len(ids) != len(set(ids)):
                self.problems.append(f"our reader saw {len(ids) - len(set(ids))} duplicates")
            if n != distinct:
                self.problems.append(f"ClickHouse saw {n - distinct} duplicates")
            bad = [i for i in ids if i.split("-")[0] not in ("a", "b", "c")]
            if bad:
                self.problems.append(f"rows nobody wrote: {bad[:3]}")
            if len(ids) < self.seen_max:
                self.problems.append(f"rows went from {self.seen_max} to {len(ids)}")
            self.seen_max = max(self.seen_max, len(ids))


def test_three_collectors_kill_9_in_commits_and_compaction_exactly_once(
    tmp_path: Path, s3: S3Server
) -> None:
    url = s3.bucket("mesh")
    data = {n: tmp_path / n for n in ("a", "b", "c")}
    reader = Reader(s3, url)
    reader.start()
    try:
        # Three collectors append at once: 3 x 6 commits race for the same table's versions.
        procs = [
            _child(s3, url, data[n], n, "--append", "6", "--seq", "1", "--rows", str(ROWS))
            for n in ("a", "b", "c")
        ]
        for p in procs:
            _run(p)
        assert len(our_ids(s3, url)) == 3 * 6 * ROWS

        # c keeps appending while a and b are killed and restarted.
        busy = _child(s3, url, data["c"], "c", "--append", "12", "--seq", "7", "--rows", str(ROWS))

        # kill -9 before a commit (files uploaded, commit not written), then after one (the
        # commit landed, the process never knew); each time a restart on the same directory.
        for seq, point in ((7, "before_commit"), (9, "after_commit")):
            _run(
                _child(
                    s3, url, data["a"], "a", "--append", "2", "--seq", str(seq), "--kill", point
                ),
                expect=-signal.SIGKILL,
            )
            _run(_child(s3, url, data["a"], "a"))

        # kill -9 around a compaction commit on b: the compacted file is uploaded, or added
        # with its inputs removed, and the process dies.
        before = our_files(s3, url)
        _run(
            _child(s3, url, data["b"], "b", "--compact", "--kill", "before_commit"),
            expect=-signal.SIGKILL,
        )

        def files_of_b(files: list[str]) -> list[str]:
            return [f for f in files if f.startswith("b_")]

        assert files_of_b(our_files(s3, url)) == files_of_b(before)  # nothing of it visible
        _run(_child(s3, url, data["b"], "b"))  # the restart commits the compaction
        assert files_of_b(our_files(s3, url)) == ["b_0000000000000001_0000000000000006.parquet"] * 2
        # Two more segments, then a compaction whose commit lands just before the kill.
        _run(_child(s3, url, data["b"], "b", "--append", "2", "--seq", "7"))
        _run(
            _child(s3, url, data["b"], "b", "--compact", "--kill", "after_commit"),
            expect=-signal.SIGKILL,
        )
        _run(_child(s3, url, data["b"], "b"))
        assert files_of_b(our_files(s3, url)) == ["b_0000000000000001_0000000000000008.parquet"] * 2

        # kill -9 at a random moment of a busy collector, then restart.
        rng = random.Random(7)
        wild = _child(s3, url, data["a"], "a", "--append", "20", "--seq", "11")
        try:
            wild.wait(timeout=rng.uniform(1.0, 4.0))
        except subprocess.TimeoutExpired:
            wild.send_signal(signal.SIGKILL)
        wild.communicate(timeout=60)
        _run(_child(s3, url, data["a"], "a"))
        _run(busy)
    finally:
        reader.stop.set()
        reader.join(120)

    assert reader.problems == []
    assert reader.reads >= 6 and reader.clickhouse_reads >= 2, (
        reader.reads,
        reader.clickhouse_reads,
    )
    expected = sorted(
        _local_ids(data["a"], "a") + _local_ids(data["b"], "b") + _local_ids(data["c"], "c")
    )
    assert len(expected) == len(set(expected)) >= (6 + 6 + 18 + 2) * ROWS
    assert sorted(our_ids(s3, url)) == expected
    assert clickhouse_counts(s3, url) == (len(expected), len(expected))
    # The product's reader (`--data-dir s3://...`): the catalog's view over the snapshot.
    env = _serve_env(s3.env)
    saved = {k: v for k, v in env.items() if k.startswith(("AWS_", "MESHLENS_S3"))}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in saved.items():
            mp.setenv(k, v)
        conn = connect(str(url))
        assert conn.sql("SELECT count(*), count(DISTINCT span_id) FROM spans").fetchall() == [
            (len(expected), len(expected))
        ]
