"""Shipping Parquet files to S3-compatible object storage, against a real S3 server (moto in
server mode on loopback): the shipper on its own, then two `meshlens serve` collectors writing
to one bucket with compaction and a kill -9 in between, read back with `meshlens sql`."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from meshlens.collector.errors import ConfigError
from meshlens.collector.receivers import otlp
from meshlens.collector.store import compaction, retention
from meshlens.collector.store.layout import ParquetSegment, visible
from meshlens.collector.store.location import store_location
from meshlens.collector.store.objectstore import (
    MAX_FAILURES_PER_ROUND,
    LocalFile,
    RemoteFile,
    Shipper,
    StoreUrl,
    list_remote,
    plan_deletes,
    plan_uploads,
)
from meshlens.collector.store.parquet_write import write_table
from meshlens.settings import OBJECT_STORE, parse_object_store
from tests.collector.conftest import REPO, ServeProcess, _serve_env, http_get, start_serve, wait_for
from tests.collector.receivers.grpc_client import export
from tests.collector.receivers.payloads import traces_request
from tests.collector.store.s3server import S3Server, s3_server


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


# ---- pure --------------------------------------------------------------------------------------


def test_store_url_parsing() -> None:
    url = StoreUrl.parse("s3://my-bucket/a//b/")
    assert (url.bucket, url.prefix, str(url)) == ("my-bucket", "a/b", "s3://my-bucket/a/b")
    assert str(StoreUrl.parse("s3://my-bucket")) == "s3://my-bucket"
    # Path("s3://b/p") is "s3:/b/p": a location survives every command's Path(args.data_dir).
    assert store_location(Path("s3://my-bucket/p")) == StoreUrl("my-bucket", "p")
    assert store_location("meshlens-data") is None
    assert store_location(Path("/var/lib/s3:/x")) is None
    with pytest.raises(ValueError, match="not an object store location"):
        StoreUrl.parse("s3://Bad_Bucket/x")
    assert parse_object_store("") == ""
    setting = next(s for s in OBJECT_STORE if s.name == "object_store")
    assert setting.convert("s3://b-1/p/") == "s3://b-1/p"
    with pytest.raises(ConfigError, match="invalid MESHLENS_OBJECT_STORE 'http://x'"):
        setting.resolve({"MESHLENS_OBJECT_STORE": "http://x"})


def _seg(lo: int, hi: int, *, node: str = "a", hr: str = "10") -> ParquetSegment:
    name = f"{node}_{lo:016d}_{hi:016d}.parquet"
    return ParquetSegment(
        Path(f"spans/dt=2026-01-01/hr={hr}/{name}"), "spans", "2026-01-01", hr, node, lo, hi
    )


def _local(seg: ParquetSegment, size: int = 100) -> LocalFile:
    return LocalFile(seg, str(seg.path), size, 0.0)


def _remote(seg: ParquetSegment, size: int = 100, mtime: float = 0.0) -> RemoteFile:
    return RemoteFile(seg, str(seg.path), size, mtime)


def test_plan_uploads_skips_shipped_covered_and_expired_files() -> None:
    day_end = datetime(2026, 1, 1, 11, tzinfo=UTC).timestamp()
    s1, s2, s3_, cover = _seg(1, 1), _seg(2, 2), _seg(3, 3), _seg(1, 2)
    old = _seg(5, 5, hr="00")
    local = [_local(s1), _local(s2), _local(s3_), _local(cover), _local(old)]
    remote = {str(s1.path): _remote(s1), str(s3_.path): _remote(s3_, size=7)}
    todo = plan_uploads(local, remote, now=day_end, retention=3600.0)
    # s1, s2 are covered locally; s3 differs in size (rewritten by a replay); hr=00 expired.
    assert [f.seg for f in todo] == [cover, s3_]


def test_plan_deletes_waits_for_the_grace_period_and_expires_partitions() -> None:
    s1, s2, cover, other = _seg(1, 1), _seg(2, 2), _seg(1, 2), _seg(1, 1, node="b")
    old = _seg(5, 5, hr="00")
    remote = {str(f.path): _remote(f, mtime=1000.0) for f in (s1, s2, other, old)}
    remote[str(cover.path)] = _remote(cover, mtime=2000.0)
    now = datetime(2026, 1, 1, 11, tzinfo=UTC).timestamp()
    assert plan_deletes(remote, now=now, retention=0.0, grace=now) == []
    deletes = plan_deletes(remote, now=now, retention=3600.0, grace=60.0)
    assert deletes == sorted([str(s1.path), str(s2.path), str(old.path)])


# ---- the shipper against a real S3 server ------------------------------------------------------


def _spans(n: int, when: datetime, tag: str) -> pa.Table:
    return pa.table(
        {
            "trace_id": [f"{tag}-{i}" for i in range(n)],
            "span_id": [f"{tag}-{i}" for i in range(n)],
            "name": [tag] * n,
            "start_ts": pa.array(
                [when + timedelta(seconds=i) for i in range(n)], pa.timestamp("us", tz="UTC")
            ),
        }
    )


def _remote_span_ids(s3: S3Server, url: StoreUrl) -> list[str]:
    """What any reader sees: the visible objects' span ids."""
    fs = s3.fs()
    files = {f.seg: f for f in list_remote(fs, url).values() if f.seg.table == "spans"}
    ids: list[str] = []
    for seg in visible(files):
        t = pq.read_table(url.path(files[seg].key), filesystem=fs, columns=["span_id"])
        ids.extend(t.column("span_id").to_pylist())
    return ids


def _keys(s3: S3Server, url: StoreUrl, node: str) -> list[str]:
    return sorted(
        k.rsplit("/", 1)[1] for k, f in list_remote(s3.fs(), url).items() if f.seg.node == node
    )


def test_shipper_mirrors_files_compaction_and_retention(tmp_path: Path, s3: S3Server) -> None:
    url = s3.bucket("prod/mesh")
    data = tmp_path / "a"
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    for seq in (1, 2, 3):
        write_table(data, "spans", _spans(10, hour, f"a{seq}"), "a", seq)
    write_table(
        data,
        "verdicts",
        pa.table({"ts": pa.array([hour], pa.timestamp("us", tz="UTC"))}),
        "gate",
        7,
    )  # another writer in the same directory: not this node's to ship
    other = tmp_path / "b"
    write_table(other, "spans", _spans(5, hour, "b"), "b", 1)
    Shipper(other, "b", url, s3.fs(), grace=0).ship_once()

    shipper = Shipper(data, "a", url, s3.fs(), grace=0)
    first = shipper.ship_once()
    assert (first.uploaded, first.deleted, first.errors, first.pending) == (3, 0, 0, 0)
    assert shipper.ship_once().uploaded == 0  # nothing new
    assert sorted(_remote_span_ids(s3, url)) == sorted(
        [f"a{s}-{i}" for s in (1, 2, 3) for i in range(10)] + [f"b-{i}" for i in range(5)]
    )

    # Compaction: the covering file goes up, then the covered objects are deleted.
    done = compaction.compact_node(
        data, "a", now=time.time(), compact_after=0, below_seq=10**15, grace=3600
    )
    assert done.outputs == 1
    second = shipper.ship_once(now=time.time() + 1)
    assert (second.uploaded, second.deleted) == (1, 3)
    assert _keys(s3, url, "a") == ["a_0000000000000001_0000000000000003.parquet"]
    assert len(_remote_span_ids(s3, url)) == 35
    assert _keys(s3, url, "b") == ["b_0000000000000001_0000000000000001.parquet"]

    # A restart (fresh listing, nothing in memory) re-ships nothing.
    again = Shipper(data, "a", url, s3.fs(), grace=0).ship_once()
    assert (again.uploaded, again.deleted) == (0, 0)

    # Retention removes this node's expired partitions, locally and remotely; b's stay.
    retention.expire(data, now=time.time(), retention=3600)
    expiring = Shipper(data, "a", url, s3.fs(), grace=0, retention=3600)
    assert expiring.ship_once().deleted == 1
    assert _keys(s3, url, "a") == []
    assert len(_remote_span_ids(s3, url)) == 5

    stats = shipper.stats()
    assert (stats.uploaded_files, stats.deleted_files, stats.errors) == (4, 3, 0)
    assert stats.lag_seconds < 60


def test_failed_uploads_are_counted_retried_and_exported(tmp_path: Path, s3: S3Server) -> None:
    url = StoreUrl("no-such-bucket-yet", "x")
    data = tmp_path / "d"
    for seq in range(1, 6):
        write_table(data, "spans", _spans(3, datetime.now(UTC), f"x{seq}"), "a", seq)
    shipper = Shipper(data, "a", url, s3.fs())
    failed = shipper.ship_once()
    # A round gives up after a few failures in a row (an unreachable store must not hold up
    # shutdown); everything stays pending.
    assert (failed.uploaded, failed.errors, failed.pending) == (0, MAX_FAILURES_PER_ROUND, 5)
    stats = shipper.stats()
    assert (stats.errors, stats.pending_files) == (MAX_FAILURES_PER_ROUND, 5)

    created = s3.bucket("x")
    shipper.url = created
    shipper._remote = None  # a new bucket: list it again
    ok = shipper.ship_once()
    assert (ok.uploaded, ok.errors, ok.pending) == (5, 0, 0)
    registry = CollectorRegistry()
    registry.register(shipper.metric_collector())
    text = generate_latest(registry).decode()
    assert "meshlens_objectstore_uploaded_files_total 5.0" in text
    assert "meshlens_objectstore_pending_files 0.0" in text
    m = re.search(r"^meshlens_objectstore_lag_seconds (\S+)$", text, re.M)
    assert m is not None and 0 <= float(m.group(1)) < 5


# ---- two collectors, one bucket ----------------------------------------------------------------


def _send(sp: ServeProcess, requests: int, *, seed: int, spans: int = 20) -> int:
    with grpc.insecure_channel(sp.grpc_target) as channel:
        for i in range(requests):
            raw = traces_request(spans, seed=seed * 1000 + i).SerializeToString()
            export(channel, otlp.TRACES, raw)
    return requests * spans


def _metric(sp: ServeProcess, name: str) -> float:
    status, body, _ = http_get(sp.api_url("/metrics"))
    m = re.search(rf"^{name} (\S+)$", body.decode(), re.M) if status == 200 else None
    return float(m.group(1)) if m else -1.0


def _sql(url: StoreUrl, s3: S3Server, query: str) -> list[dict[str, object]]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshlens",
            "sql",
            "--data-dir",
            str(url),
            "--format",
            "json",
            query,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=_serve_env(s3.env),
    )
    assert out.returncode == 0, out.stderr
    rows: list[dict[str, object]] = json.loads(out.stdout)
    return rows


def test_two_collectors_one_bucket_exactly_once(tmp_path: Path, s3: S3Server) -> None:
    url = s3.bucket("mesh")

    def serve(node: str) -> ServeProcess:
        return start_serve(
            tmp_path / node,
            "--node",
            node,
            "--object-store",
            str(url),
            "--ship-interval",
            "0.2s",
            "--decode-workers",
            "0",
            env=s3.env,
        )

    def shipped(expected: int) -> bool:
        return len(_remote_span_ids(s3, url)) == expected

    running: list[ServeProcess] = []
    try:
        a, b = serve("a"), serve("b")
        running += [a, b]
        sent = _send(a, 5, seed=1) + _send(b, 4, seed=2)
        wait_for(lambda: shipped(sent), 30, f"{sent} spans in the bucket")
        assert _metric(a, "meshlens_objectstore_uploaded_files_total") >= 1

        # kill -9 while a is shipping: some files are up, the rest is in its WAL or local files.
        base = _metric(a, "meshlens_objectstore_uploaded_files_total")
        seed = 10
        while _metric(a, "meshlens_objectstore_uploaded_files_total") <= base:
            sent += _send(a, 1, seed=seed)
            seed += 1
        sent += _send(a, 3, seed=seed)
        assert a.stop(sig=signal.SIGKILL) == -signal.SIGKILL
        assert len(_remote_span_ids(s3, url)) < sent  # the restart has something to ship
        a = serve("a")  # same data dir and node: WAL recovery, then re-ship what is missing
        running.append(a)
        wait_for(lambda: shipped(sent), 30, f"{sent} spans in the bucket after kill -9")

        # Compaction on node a (offline, partitions treated as ended): still exactly once.
        assert a.stop() == 0
        done = compaction.compact_node(
            tmp_path / "a",
            "a",
            now=time.time() + 7200,
            compact_after=0,
            below_seq=10**18,
            grace=3600,
        )
        assert done.outputs >= 1
        a = serve("a")
        running.append(a)
        wait_for(
            lambda: any(
                f.seg.node == "a" and f.seg.lo < f.seg.hi
                for f in list_remote(s3.fs(), url).values()
            ),
            30,
            "the compacted file in the bucket",
        )
        for sp in (a, b):
            assert sp.stop() == 0  # graceful: a final round ships everything
    finally:
        for sp in running:
            if sp.proc.poll() is None:
                sp.stop()

    rows = _sql(url, s3, "SELECT count(*) AS n, count(DISTINCT span_id) AS d FROM spans")
    assert rows == [{"n": sent, "d": sent}]
