"""Envoy's gRPC access-log service on the OTLP port: node identity per stream, every entry
stored, and a thousand sidecars' streams held open at once."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import grpc
import grpc.aio
import pytest

from meshlens.collector.receivers.envoy_als import INLINE_PARSE_BYTES, METHOD
from tests.collector.conftest import ServeProcess, http_get, wait_for
from tests.collector.receivers.grpc_client import stream_als
from tests.collector.receivers.payloads import als_message
from tests.collector.receivers.rows import count_rows, query


def test_node_identity_of_the_first_message_applies_to_the_whole_stream(
    running_serve: ServeProcess,
) -> None:
    with grpc.insecure_channel(running_serve.grpc_target) as ch:
        stream_als(
            ch,
            [
                als_message(3, first=True),
                als_message(2, first=False),
                als_message(4, first=False, code=503),
            ],
        )
        stream_als(
            ch,
            [
                als_message(
                    5,
                    first=True,
                    cluster="inbound|9080||",
                    workload="reviews-v2",
                    app="reviews",
                    version="v2",
                ),
            ],
        )
    assert running_serve.stop() == 0
    rows = query(
        running_serve.data_dir,
        "requests",
        "reporter, source_workload, destination_workload, destination_version, "
        "response_code, count(*)",
        rest="group by all order by all",
    )
    assert rows == [
        ("destination", "unknown", "reviews-v2", "v2", 200, 5),
        ("source", "productpage-v1", "unknown", "v1", 200, 5),
        ("source", "productpage-v1", "unknown", "v1", 503, 4),
    ]


def test_messages_over_the_inline_parse_size_are_stored_and_checked(
    running_serve: ServeProcess,
) -> None:
    # Above INLINE_PARSE_BYTES a message is parsed in the thread pool instead of on the event
    # loop: the same rows, and the same INVALID_ARGUMENT for a malformed one.
    big = als_message(3000, first=True)
    assert len(big) > INLINE_PARSE_BYTES
    with grpc.insecure_channel(running_serve.grpc_target) as ch:
        stream_als(ch, [big, als_message(3, first=False)])
        bad = big + b"\x0a\xff\xff\xff\x0f"  # a field whose length runs past the end
        assert len(bad) > INLINE_PARSE_BYTES
        with pytest.raises(grpc.RpcError) as err:
            stream_als(ch, [als_message(1, first=True), bad])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed protobuf" in (err.value.details() or "")
    assert running_serve.stop() == 0
    # The message before the malformed one stays accepted.
    assert count_rows(running_serve.data_dir, "requests") == 3000 + 3 + 1


def _rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"VmRSS:\s+(\d+) kB", text)
    assert m
    return int(m.group(1)) / 1024


def _gauge(sp: ServeProcess, name: str) -> float | None:
    status, body, _ = http_get(sp.api_url("/metrics"))
    assert status == 200
    m = re.search(rf"^{name} (\S+)$", body.decode(), re.MULTILINE)
    return float(m.group(1)) if m else None


def test_a_thousand_concurrent_streams_are_held(running_serve: ServeProcess) -> None:
    n_streams, per_message = 1000, 2
    release = asyncio.Event()

    async def sidecar(channel: grpc.aio.Channel, i: int) -> None:
        async def messages():  # type: ignore[no-untyped-def]
            yield als_message(per_message, first=True, workload=f"app{i}-v1", app=f"app{i}")
            await release.wait()
            yield als_message(per_message, first=False)

        call = channel.stream_unary(METHOD, request_serializer=None, response_deserializer=None)
        await call(messages(), timeout=120)

    async def main() -> float:
        channels = [grpc.aio.insecure_channel(running_serve.grpc_target) for _ in range(8)]
        tasks = [asyncio.create_task(sidecar(channels[i % 8], i)) for i in range(n_streams)]
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            None,
            lambda: wait_for(
                lambda: _gauge(running_serve, "meshlens_envoy_als_streams") == n_streams,
                60,
                f"{n_streams} open ALS streams",
                interval=0.2,
            ),
        )
        # every stream's first message is durable while all of them are still open
        await loop.run_in_executor(
            None,
            lambda: wait_for(
                lambda: count_rows(running_serve.data_dir, "requests") == n_streams * per_message,
                30,
                "first messages converted",
                interval=0.2,
            ),
        )
        rss = _rss_mib(running_serve.proc.pid)
        release.set()
        await asyncio.gather(*tasks)
        for ch in channels:
            await ch.close()
        return rss

    rss = asyncio.run(main())
    print(f"collector RSS with {n_streams} open ALS streams: {rss:.0f} MiB")
    assert rss < 1024
    assert running_serve.stop() == 0
    assert count_rows(running_serve.data_dir, "requests") == n_streams * per_message * 2
    assert query(running_serve.data_dir, "requests", "count(distinct source_workload)") == [
        (n_streams,)
    ]
