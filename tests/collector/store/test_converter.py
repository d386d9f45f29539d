"""convert_segment's decoding: two-step (batched) decoders give the same rows as one-step."""

from __future__ import annotations

import pyarrow as pa
import pytest

from meshlens.collector.decode import envoy_als
from meshlens.collector.decode.envoy_als import decode_als_record
from meshlens.collector.proto.gen import meshlens_als_pb2
from meshlens.collector.store.parquet_write import conform
from meshlens.collector.store.records import Record, RecordKind
from meshlens.collector.store.wal_to_parquet import BATCH_RECORDS, decode_all

IDENT = meshlens_als_pb2.StreamAccessLogsMessage.Identifier(log_name="als")
IDENT.node.id = "sidecar~10.0.0.7~productpage-v1-5f6b7c8d9-abcde.default~default.svc.cluster.local"
IDENT.node.metadata.update({"NAMESPACE": "default", "WORKLOAD_NAME": "productpage-v1"})


def _als(seed: int, cluster: str, entries: int = 3) -> Record:
    msg = meshlens_als_pb2.StreamAccessLogsMessage()
    for i in range(entries):
        e = msg.http_logs.log_entry.add()
        c = e.common_properties
        c.upstream_cluster = cluster
        c.start_time.FromMilliseconds(1_700_000_000_000 + seed * 10 + i)
        c.upstream_remote_address.socket_address.address = f"10.1.{seed % 250}.{i}"
        e.request.authority = ""
        e.response.response_code.value = 200 + i
    return Record(RecordKind.ENVOY_ALS, seed, msg.SerializeToString(), IDENT.SerializeToString())


def _one_by_one(records: list[Record]) -> pa.Table:
    return pa.concat_tables(conform("requests", decode_als_record(r)["requests"]) for r in records)


def _records() -> list[Record]:
    clusters = ("outbound|9080|v1|reviews.default.svc.cluster.local", "PassthroughCluster")
    return [_als(s, clusters[s % 2]) for s in range(2 * BATCH_RECORDS + 5)]


def test_batched_rows_equal_record_by_record_with_a_bad_record_kept_apart() -> None:
    records = _records()
    bodies = [r.encode() for r in records]
    bad = Record(RecordKind.ENVOY_ALS, 0, b"\xff\xff not protobuf").encode()
    bodies.insert(7, bad)
    tables, failed, samples = decode_all(bodies, {})
    assert failed == [bad] and "record 7 (ENVOY_ALS)" in samples[0]
    assert tables["requests"].equals(_one_by_one(records))


def test_passthrough_identity_follows_the_upstream_host_across_records() -> None:
    # The identity cache is shared by records; for a passthrough cluster the upstream host
    # names the destination, so it must stay part of the key there (and only there).
    tables, _, _ = decode_all([_als(s, "PassthroughCluster", 1).encode() for s in (1, 2)], {})
    assert tables["requests"].column("destination_service").to_pylist() == ["10.1.1.0", "10.1.2.0"]
    tables, _, _ = decode_all(
        [_als(s, "outbound|9080|v1|reviews.default.svc.cluster.local", 1).encode() for s in (1, 2)],
        {},
    )
    assert set(tables["requests"].column("destination_service").to_pylist()) == {
        "reviews.default.svc.cluster.local"
    }


def test_a_failing_batch_step_falls_back_to_record_by_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(parts: object) -> dict[str, pa.Table]:
        raise RuntimeError("batch step bug")

    monkeypatch.setattr(envoy_als, "als_columns_tables", broken)
    records = _records()[:10]
    tables, failed, _ = decode_all([r.encode() for r in records], {})
    assert failed == [] and tables["requests"].equals(_one_by_one(records))
