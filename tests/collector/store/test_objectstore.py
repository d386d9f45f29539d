"""Shipping Parquet files into the shared store's Delta tables, against a real S3 server (moto
in server mode on loopback): the shipper on its own, then two `meshlens serve` collectors
committing to one bucket with compaction and a kill -9 in between, read back with
`meshlens sql` and with ClickHouse (chdb)."""

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
import pyarrow.fs as pafs
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from meshlens.collector.errors import ConfigError
from meshlens.collector.receivers import otlp
from meshlens.collector.store import compaction, retention
from meshlens.collector.store.delta_table import storage_options
from meshlens.collector.store.location import store_location
from meshlens.collector.store.objectstore import Shipper, StoreUrl
from meshlens.collector.store.parquet_write import write_table
from meshlens.settings import OBJECT_STORE, parse_object_store
from tests.collector.conftest import REPO, ServeProcess, _serve_env, http_get, start_serve, wait_for
from tests.collector.receivers.grpc_client import export
from tests.collector.receivers.payloads import traces_request
from tests.collector.store.delta_readers import clickhouse_counts, our_files, our_ids
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


def _shipper(data: Path, node: str, url: StoreUrl, s3: S3Server, **kw: float) -> Shipper:
    return Shipper(data, node, url, s3.fs(), options=storage_options(s3.options), grace=0, **kw)


def test_shipper_commits_files_compaction_and_retention(tmp_path: Path, s3: S3Server) -> None:
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
    _shipper(other, "b", url, s3).ship_once()

    shipper = _shipper(data, "a", url, s3)
    first = shipper.ship_once()
    assert (first.uploaded, first.commits, first.deleted, first.errors) == (3, 1, 0, 0)
    assert shipper.ship_once().uploaded == 0  # nothing new
    expected = sorted(
        [f"a{s}-{i}" for s in (1, 2, 3) for i in range(10)] + [f"b-{i}" for i in range(5)]
    )
    assert sorted(our_ids(s3, url)) == expected
    assert clickhouse_counts(s3, url) == (35, 35)

    # Compaction: one commit adds the covering file and removes the three it covers.
    done = compaction.compact_node(
        data, "a", now=time.time(), compact_after=0, below_seq=10**15, grace=3600
    )
    assert done.outputs == 1
    second = shipper.ship_once(now=time.time() + 1)
    assert (second.uploaded, second.commits, second.deleted) == (1, 1, 3)
    assert [f for f in our_files(s3, url) if f.startswith("a_")] == [
        "a_0000000000000001_0000000000000003.parquet"
    ]
    assert sorted(our_ids(s3, url)) == expected
    assert clickhouse_counts(s3, url) == (35, 35)
    # VACUUM deletes the removed objects (grace 0 here); the snapshot is unchanged.
    fs = s3.fs()
    removed = url.path("spans/dt=" + hour.strftime("%Y-%m-%d") + f"/hr={hour:%H}/")
    assert shipper.ship_once(vacuum=True).vacuumed == 3
    left = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(removed)))
    assert left == [
        "a_0000000000000001_0000000000000003.parquet",
        "b_0000000000000001_0000000000000001.parquet",
    ]
    assert clickhouse_counts(s3, url) == (35, 35)

    # A restart (the table read again, nothing in memory) commits nothing.
    again = _shipper(data, "a", url, s3).ship_once()
    assert (again.uploaded, again.commits) == (0, 0)

    # Retention removes this node's expired partitions, locally and in the table; b's stay.
    retention.expire(data, now=time.time(), retention=3600)
    expiring = _shipper(data, "a", url, s3, retention=3600)
    assert expiring.ship_once().deleted == 1
    assert [f for f in our_files(s3, url) if f.startswith("a_")] == []
    assert clickhouse_counts(s3, url) == (5, 5)

    stats = shipper.stats()
    assert (stats.uploaded_files, stats.commits, stats.deleted_files, stats.errors) == (4, 2, 3, 0)
    assert stats.lag_seconds < 60


def test_failed_rounds_are_counted_retried_and_exported(tmp_path: Path, s3: S3Server) -> None:
    url = StoreUrl("no-such-bucket-yet", "x")
    data = tmp_path / "d"
    for seq in range(1, 6):
        write_table(data, "spans", _spans(3, datetime.now(UTC), f"x{seq}"), "a", seq)
    shipper = _shipper(data, "a", url, s3)
    failed = shipper.ship_once()
    assert (failed.uploaded, failed.commits) == (0, 0)
    assert failed.errors >= 1
    stats = shipper.stats()
    assert stats.errors >= 1 and stats.commits == 0

    shipper.url = s3.bucket("x")  # the bucket now exists: the next round commits everything
    ok = shipper.ship_once()
    assert (ok.uploaded, ok.commits, ok.errors, ok.pending) == (5, 1, 0, 0)
    registry = CollectorRegistry()
    registry.register(shipper.metric_collector())
    text = generate_latest(registry).decode()
    assert "meshlens_objectstore_uploaded_files_total 5.0" in text
    assert "meshlens_objectstore_commits_total 1.0" in text
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
        return len(our_ids(s3, url)) == expected

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
        assert len(our_ids(s3, url)) < sent  # the restart has something to ship
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
                f.startswith("a_") and f.split("_")[1] != f.split("_")[2].split(".")[0]
                for f in our_files(s3, url)
            ),
            30,
            "the compacted file in the table",
        )
        for sp in (a, b):
            assert sp.stop() == 0  # graceful: a final round ships everything
    finally:
        for sp in running:
            if sp.proc.poll() is None:
                sp.stop()

    rows = _sql(url, s3, "SELECT count(*) AS n, count(DISTINCT span_id) AS d FROM spans")
    assert rows == [{"n": sent, "d": sent}]
    assert clickhouse_counts(s3, url) == (sent, sent)


def test_a_table_made_by_an_older_schema_gains_the_new_columns(
    tmp_path: Path, s3: S3Server
) -> None:
    from deltalake import DeltaTable

    from meshlens.collector.store.delta_table import table_schema, table_uri
    from tests.collector.store.delta_readers import clickhouse

    url = s3.bucket("old")
    full = table_schema("spans")
    older = pa.schema([f for f in full if f.name not in ("links", "scope_name")])
    DeltaTable.create(
        table_uri(url, "spans"),
        schema=older,
        partition_by=["dt", "hr"],
        storage_options=storage_options(s3.options),
    )
    data = tmp_path / "a"
    spans = _spans(4, datetime.now(UTC) - timedelta(hours=1), "s").append_column(
        "scope_name", pa.array(["io.opentelemetry.http"] * 4)
    )
    write_table(data, "spans", spans, "a", 1)
    assert _shipper(data, "a", url, s3).ship_once().commits == 1
    rows = clickhouse(s3, url, "spans", "scope_name, count()", "GROUP BY scope_name")
    assert [tuple(r) for r in rows] == [("io.opentelemetry.http", 4)]


def test_an_unusable_table_location_is_a_clear_error(s3: S3Server) -> None:
    from meshlens.collector.errors import DeltaStoreError
    from meshlens.collector.store.delta_table import open_table

    missing = StoreUrl("no-such-bucket-here", "mesh")
    with pytest.raises(DeltaStoreError, match=r"delta table s3://no-such-bucket-here/mesh/spans"):
        open_table(missing, "spans", storage_options(s3.options), create=True)
