"""meshlens.httpd under hostile or broken clients (issue 18): chunked bodies, short bodies,
idle connections and the connection cap, auth before the body, deep JSON, non-finite floats,
client disconnects. Real servers on 127.0.0.1:0, raw sockets, bounded waits."""

from __future__ import annotations

import gzip
import io
import json
import logging
import math
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import meshlens.httpd as httpd
from meshlens.collector.http_body import BodyError, body_length, read_body, read_chunked
from meshlens.httpd import HttpOptions, Request, Response, Route, start_http_server
from tests.collector.conftest import wait_for
from tests.collector.receivers.payloads import traces_request
from tests.collector.receivers.rows import count_rows

Calls = list[bytes]


def _server(calls: Calls, **opts: Any) -> tuple[httpd.RunningHttpServer, Callable[[], None]]:
    def echo(req: Request) -> Response:
        calls.append(req.body)
        return Response.json({"n": len(req.body)})

    def deep(req: Request) -> Response:
        return Response.json({"body": req.json()})

    routes = [
        Route("POST", "/echo", echo),
        Route("POST", "/json", deep),
        Route("GET", "/inf", lambda r: Response.json({"x": math.inf, "y": [-math.inf, math.nan]})),
    ]
    srv = start_http_server("127.0.0.1", 0, routes, HttpOptions(**opts))
    return srv, srv.stop


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[int, Calls]]]:
    stops: list[Callable[[], None]] = []

    def factory(**opts: Any) -> tuple[int, Calls]:
        calls: Calls = []
        srv, stop = _server(calls, **opts)
        stops.append(stop)
        return srv.port, calls

    yield factory
    for stop in stops:
        stop()


def exchange(port: int, data: bytes, *, shut_wr: bool = True, timeout: float = 10.0) -> bytes:
    """Send raw bytes, optionally half-close, read until the server closes (bounded)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if shut_wr:
            s.shutdown(socket.SHUT_WR)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.") else 0


def body_of(raw: bytes) -> Any:
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])


def chunked(*chunks: bytes, trailer: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n" + trailer + b"\r\n"


HEAD = b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"


# ---- item 3: chunked bodies -------------------------------------------------------------------


def test_chunked_body_reaches_the_handler_whole(serve: Callable[..., tuple[int, Calls]]) -> None:
    port, calls = serve()
    body = chunked(b"hello ", b"chunked ", b"world", trailer=b"X-Checksum: 1\r\n")
    raw = exchange(port, HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body)
    assert status_of(raw) == 200, raw
    assert calls == [b"hello chunked world"]


def test_chunked_body_over_the_limit_is_refused_while_reading(
    serve: Callable[..., tuple[int, Calls]],
) -> None:
    port, calls = serve(max_body=1000)
    # The body never ends: the answer must come from the running total, not from the end.
    start = HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"258\r\n" + b"x" * 600 + b"\r\n"
    raw = exchange(port, start + b"258\r\n" + b"x" * 600 + b"\r\n", shut_wr=False)
    assert status_of(raw) == 413
    assert "exceeds the limit of 1000 bytes" in body_of(raw)["error"]
    assert calls == []


def test_chunk_framing_errors_name_the_problem() -> None:
    with pytest.raises(BodyError, match="bad chunk size b'zz'"):
        read_chunked(io.BytesIO(b"zz\r\nab\r\n0\r\n\r\n"), 100)
    with pytest.raises(BodyError, match="bad chunk size b'-1'"):
        read_chunked(io.BytesIO(b"-1\r\n"), 100)
    with pytest.raises(BodyError, match="chunk ended after 2 of 16 bytes"):
        read_chunked(io.BytesIO(b"10\r\nab"), 100)
    with pytest.raises(BodyError, match="chunked body ended before its last chunk"):
        read_chunked(io.BytesIO(b"2\r\nab\r\n"), 100)
    with pytest.raises(BodyError, match="chunk data longer than its size"):
        read_chunked(io.BytesIO(b"2\r\nabc\r\n0\r\n\r\n"), 100)
    assert read_chunked(io.BytesIO(b"2;ext=1\r\nab\r\n0\r\nT: v\r\n\r\n"), 100) == b"ab"


def test_ambiguous_framing_is_refused() -> None:
    with pytest.raises(BodyError, match="both Transfer-Encoding and Content-Length"):
        body_length({"transfer-encoding": ["chunked"], "content-length": ["5"]})
    with pytest.raises(BodyError, match="unsupported Transfer-Encoding 'gzip, chunked'"):
        body_length({"transfer-encoding": ["gzip, chunked"]})
    with pytest.raises(BodyError, match=r"conflicting Content-Length headers: \['4', '5'\]"):
        body_length({"content-length": ["5", "4"]})
    with pytest.raises(BodyError, match="bad Content-Length '-5'"):
        body_length({"content-length": ["-5"]})
    assert body_length({}) == 0 and body_length({"transfer-encoding": ["Chunked"]}) is None


# ---- item 4: short bodies ---------------------------------------------------------------------


def test_short_body_never_reaches_the_handler(serve: Callable[..., tuple[int, Calls]]) -> None:
    port, calls = serve()
    raw = exchange(port, HEAD + b"Content-Length: 100\r\n\r\n" + b"x" * 50)
    assert status_of(raw) == 400
    assert body_of(raw)["error"] == "body ended after 50 of 100 bytes"
    assert calls == []
    with pytest.raises(BodyError, match="body ended after 3 of 4 bytes"):
        read_body(io.BytesIO(b"abc"), 4, 100)


def test_a_stalled_body_times_out_and_reaches_no_handler(
    serve: Callable[..., tuple[int, Calls]],
) -> None:
    port, calls = serve(idle_timeout_s=0.3)
    t0 = time.monotonic()
    raw = exchange(port, HEAD + b"Content-Length: 100\r\n\r\n" + b"x" * 50, shut_wr=False)
    assert raw == b""  # closed without an answer: the client is presumed gone
    assert time.monotonic() - t0 < 5.0
    assert calls == []


# ---- item 10: idle connections, the cap -------------------------------------------------------


def test_an_idle_connection_is_closed(serve: Callable[..., tuple[int, Calls]]) -> None:
    port, _calls = serve(idle_timeout_s=0.3)
    t0 = time.monotonic()
    assert exchange(port, b"", shut_wr=False, timeout=5.0) == b""
    assert 0.2 < time.monotonic() - t0 < 5.0


def test_connections_over_the_cap_get_503_and_the_server_recovers(
    serve: Callable[..., tuple[int, Calls]],
) -> None:
    port, calls = serve(max_connections=3)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    try:
        # Accepted in order: by the time the 4th is accepted the 3 idle ones hold the slots.
        # The server answers and closes at once; when our request bytes reach it after that,
        # its kernel resets the connection and the 503 can be lost in flight (seen as ENOTCONN
        # on our half-close): such a probe says nothing, so probe again (bounded).
        raw = b""
        for _ in range(20):
            try:
                raw = exchange(port, HEAD + b"Content-Length: 2\r\n\r\nhi")
            except OSError:
                continue
            if raw:
                break
        assert status_of(raw) == 503 and b"Retry-After: 1" in raw
        assert body_of(raw) == {"error": "too many open connections", "status": 503}
    finally:
        for s in idle:
            s.close()

    def served() -> bool:
        # Until the server has seen the idle ones close, it may still refuse (and close) this
        # connection before our half-close: that is "not yet", not a failure.
        try:
            return status_of(exchange(port, HEAD + b"Content-Length: 2\r\n\r\nhi")) == 200
        except OSError:
            return False

    wait_for(served, 10, "a request after the idle connections closed")
    assert b"hi" in calls


# ---- item 16b: authenticate before reading and decompressing ----------------------------------


def test_token_is_checked_before_the_body_is_read_or_decompressed(
    serve: Callable[..., tuple[int, Calls]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, calls = serve(auth_token="s3cret")
    inflated: list[int] = []
    real = httpd.decompress

    def counting(body: bytes, encoding: str, limit: int) -> bytes:
        inflated.append(len(body))
        return real(body, encoding, limit)

    monkeypatch.setattr(httpd, "decompress", counting)
    bomb = gzip.compress(b"\0" * (16 * 1024 * 1024))  # ~16 KB that inflates to 16 MiB
    head = HEAD + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n" % len(bomb)
    raw = exchange(port, head + b"\r\n" + bomb)
    assert status_of(raw) == 401 and inflated == [] and calls == []
    raw = exchange(port, head + b"Authorization: Bearer s3cret\r\n\r\n" + bomb)
    assert status_of(raw) == 200 and inflated == [len(bomb)]


def test_a_refused_request_expecting_100_continue_gets_the_refusal_instead(
    serve: Callable[..., tuple[int, Calls]],
) -> None:
    port, calls = serve(auth_token="s3cret", idle_timeout_s=30)
    head = HEAD + b"Expect: 100-continue\r\nContent-Length: 100000\r\n\r\n"
    t0 = time.monotonic()
    raw = exchange(port, head, shut_wr=False, timeout=10)  # the body is never sent
    assert raw.startswith(b"HTTP/1.1 401") and b"100 Continue" not in raw, raw
    assert time.monotonic() - t0 < 5 and calls == []


def test_a_refused_small_body_leaves_the_connection_usable(
    serve: Callable[..., tuple[int, Calls]],
) -> None:
    port, calls = serve(auth_token="s3cret")
    req = b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\nhi"
    ok = req.replace(b"\r\n\r\n", b"\r\nAuthorization: Bearer s3cret\r\nConnection: close\r\n\r\n")
    raw = exchange(port, req + ok)  # keep-alive: the 401, then the next request on the socket
    assert raw.count(b"HTTP/1.1 ") == 2
    assert raw.startswith(b"HTTP/1.1 401") and b"HTTP/1.1 200" in raw and calls == [b"hi"]


# ---- item 17: deep JSON, non-finite floats, disconnects ---------------------------------------


def test_deeply_nested_json_is_a_400(serve: Callable[..., tuple[int, Calls]]) -> None:
    port, _ = serve()
    deep = b"[" * 100_000 + b"]" * 100_000
    head = b"POST /json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    raw = exchange(port, head + b"Content-Length: %d\r\n\r\n" % len(deep) + deep)
    assert status_of(raw) == 400
    assert body_of(raw)["error"] == "request body is JSON nested too deeply"


def _strict(raw: bytes) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"invalid JSON constant {name}")

    return json.loads(raw, parse_constant=refuse)


def test_non_finite_floats_are_null_so_the_json_stays_valid(
    serve: Callable[..., tuple[int, Calls]],
) -> None:
    port, _ = serve()
    raw = exchange(port, b"GET /inf HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert _strict(raw.split(b"\r\n\r\n", 1)[1]) == {"x": None, "y": [None, None]}
    assert _strict(Response.json({"a": (1.5, float("nan"))}).body) == {"a": [1.5, None]}


def _reset(s: socket.socket) -> None:
    """Close with an RST, as a client that crashed or timed out."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def test_client_disconnects_are_debug_logs_not_tracebacks(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    gone = threading.Event()
    answered = threading.Event()

    def slow(req: Request) -> Response:
        gone.wait(10)
        return Response(200, b"x" * (8 * 1024 * 1024), "application/octet-stream")

    def after(req: Request) -> Response:
        answered.set()
        return Response.json({})

    routes = [Route("GET", "/slow", slow), Route("GET", "/after", after)]
    srv = start_http_server("127.0.0.1", 0, routes, HttpOptions(name="t"))
    caplog.set_level(logging.DEBUG, logger="meshlens.httpd")
    try:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        time.sleep(0.2)  # let the handler start; the outcome does not depend on it
        _reset(s)
        gone.set()
        s2 = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        s2.sendall(b"GET /af")  # headers cut off by a reset
        _reset(s2)
        s3 = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        s3.sendall(b"GET /after HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert answered.wait(10)
        s3.close()

        def logged() -> bool:
            return any("answer not sent" in r.getMessage() for r in caplog.records)

        wait_for(logged, 10, "the debug record of the lost answer")
    finally:
        srv.stop()
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ---- items 3, 4 end to end: what the OTLP/HTTP receiver stores --------------------------------


def _otlp_head(length: int | None) -> bytes:
    framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    return (
        b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/x-protobuf\r\n" + framing + b"\r\n\r\n"
    )


def test_chunked_otlp_export_stores_every_span(collector_factory: Any) -> None:
    c = collector_factory()
    raw = traces_request(20).SerializeToString()
    parts = [raw[i : i + 100] for i in range(0, len(raw), 100)]
    resp = exchange(c.ports.http, _otlp_head(None) + chunked(*parts))
    assert status_of(resp) == 200, resp
    assert c.store.wait_converted(10)
    assert count_rows(c.data_dir, "spans") == 20


def test_a_short_otlp_body_stores_nothing_and_the_retry_stores_once(
    collector_factory: Any,
) -> None:
    c = collector_factory()
    # 100 ResourceSpans of one span each (concatenated messages merge): cut after the 50th,
    # the prefix is itself a valid request of 50 spans, which the old server stored.
    each = [traces_request(1, seed=i).SerializeToString() for i in range(100)]
    raw, half = b"".join(each), b"".join(each[:50])
    resp = exchange(c.ports.http, _otlp_head(len(raw)) + half)
    assert status_of(resp) == 400, resp
    assert f"body ended after {len(half)} of {len(raw)} bytes" in resp.decode(errors="replace")
    resp = exchange(c.ports.http, _otlp_head(len(raw)) + raw)  # the client's retry
    assert status_of(resp) == 200
    assert c.store.wait_converted(10)
    assert count_rows(c.data_dir, "spans") == 100
