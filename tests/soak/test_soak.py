"""Long reliability runs (tens of minutes in total on 2 cores):

* 50 kill -9 of `meshlens serve` at random points of ingest and compaction, every
  acknowledged span checked exactly once after each restart;
* 60 s of overload (16 senders, far over the conversion rate): bounded RSS, refusals with
  retry hints, every acknowledged span stored, recovery;
* 1000 ALS streams held open through a burst of span overload, then all their entries stored;
* the fuzzers of tests/reliability/test_fuzz.py with 3000 examples each (MESHLENS_SOAK=1
  raises their counts; they are re-collected here).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import grpc
import pytest

from meshlens.collector.receivers.envoy_als import METHOD as ALS_METHOD
from tests.collector.conftest import wait_for
from tests.collector.receivers.payloads import als_message
from tests.collector.receivers.rows import count_rows, query
from tests.reliability import test_fuzz
from tests.reliability.crash import crash_rounds
from tests.reliability.harness import kill9, launch, metric, rss_mib
from tests.reliability.overload import SERVE_ARGS, burst, run_overload

pytestmark = pytest.mark.slow

fuzz_serve = test_fuzz.fuzz_serve
test_fuzz_registered_decoders_random = test_fuzz.test_every_registered_decoder_on_random_bytes
test_fuzz_registered_decoders_mutated = (
    test_fuzz.test_every_registered_decoder_on_mutated_valid_records
)
test_fuzz_access_log_text = test_fuzz.test_access_log_text_lines_with_hostile_fields
test_fuzz_access_log_json = test_fuzz.test_access_log_json_lines_with_hostile_values
test_fuzz_otlp_json = test_fuzz.test_otlp_json_with_one_value_replaced_anywhere
test_fuzz_otlp_http = (
    test_fuzz.test_otlp_http_random_bodies_get_4xx_or_200_and_the_server_keeps_serving
)
test_fuzz_grpc = test_fuzz.test_grpc_random_bodies_get_a_status_and_the_server_keeps_serving
test_fuzz_zz_after = test_fuzz.test_after_fuzzing_the_collector_still_converts_and_serves


@pytest.mark.timeout(3600)
def test_fifty_kills_during_ingest_and_compaction(tmp_path: Path) -> None:
    report = crash_rounds(tmp_path / "data", kills=50)
    print(report)
    assert report.kills == 50
    assert report.kills_mid_merge + report.kills_mid_convert > 0, (
        "no kill landed inside a Parquet write; the test did not exercise compaction crashes"
    )
    assert report.merged_files > 0


@pytest.mark.timeout(900)
def test_a_minute_of_overload(tmp_path: Path) -> None:
    r = run_overload(tmp_path / "data", seconds=60)
    print(r)
    refused = {c: n for c, n in r.codes.items() if c != "OK"}
    assert refused and set(refused) <= {"RESOURCE_EXHAUSTED", "UNAVAILABLE"}, r.codes
    assert all(int(r.retry_hints[c]) > 0 for c in refused), r.retry_hints
    assert r.peak_rss_mib < 1024, r
    assert r.stored_spans == r.acked_spans, r


@pytest.mark.timeout(900)
def test_a_thousand_als_streams_held_through_overload(tmp_path: Path) -> None:
    n_streams, per_message = 1000, 3
    sp = launch(tmp_path / "data", *SERVE_ARGS, flush_interval="0.5s")
    release = threading.Event()
    errors: list[str] = []
    peak = [0.0]

    async def sidecars() -> None:
        channels = [grpc.aio.insecure_channel(sp.grpc_target) for _ in range(8)]

        async def one(i: int) -> None:
            async def messages():  # type: ignore[no-untyped-def]
                yield als_message(per_message, first=True, workload=f"w{i}-v1", app=f"w{i}")
                while not release.is_set():
                    await asyncio.sleep(0.2)
                yield als_message(per_message, first=False)

            call = channels[i % 8].stream_unary(
                ALS_METHOD, request_serializer=None, response_deserializer=None
            )
            try:
                await call(messages(), timeout=600)
            except grpc.aio.AioRpcError as exc:
                errors.append(f"{exc.code()} {exc.details()}")

        await asyncio.gather(*(one(i) for i in range(n_streams)))
        for ch in channels:
            await ch.close()

    runner = threading.Thread(target=lambda: asyncio.run(sidecars()), daemon=True)
    try:
        runner.start()
        wait_for(
            lambda: metric(sp, "meshlens_envoy_als_streams") == n_streams,
            120,
            f"{n_streams} open ALS streams",
            interval=0.5,
        )
        r = burst(sp, seconds=30)  # span overload while the streams stay open
        peak[0] = max(r.peak_rss_mib, rss_mib(sp.proc.pid))
        assert metric(sp, "meshlens_envoy_als_streams") == n_streams
        release.set()
        runner.join(300)
        assert not errors, errors[:5]
        assert sp.stop(timeout=120) == 0, sp.log()[-3000:]
    finally:
        release.set()
        if sp.proc.poll() is None:
            kill9(sp)
    print(f"RSS peak {peak[0]:.0f} MiB with {n_streams} ALS streams and overload: {r}")
    assert peak[0] < 1024
    assert count_rows(sp.data_dir, "requests") == n_streams * per_message * 2
    assert query(sp.data_dir, "requests", "count(distinct source_workload)") == [(n_streams,)]
