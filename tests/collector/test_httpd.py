from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from meshlens.httpd import (
    HttpError,
    HttpOptions,
    Request,
    Response,
    Route,
    RunningHttpServer,
    decompress,
    dispatch,
    start_http_server,
)


def _echo(req: Request) -> Response:
    return Response.json({"path": req.path, "n": req.arg("n"), "body": req.json()})


def _fail(req: Request) -> Response:
    raise HttpError(422, "bad thing in field 'x'")


def _boom(req: Request) -> Response:
    raise RuntimeError("secret-token-123 leaked?")


ROUTES = [
    Route("POST", "/echo", _echo),
    Route("GET", "/api/*", _echo),
    Route("GET", "/fail", _fail),
    Route("GET", "/boom", _boom),
    Route("GET", "/healthz", lambda r: Response.text("ok")),
]


def _req(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> Request:
    return Request(method, path, {}, headers or {}, body)


def test_dispatch_routes_exact_and_prefix() -> None:
    assert json.loads(dispatch(ROUTES, HttpOptions(), _req("GET", "/api/v1/x")).body)["path"] == (
        "/api/v1/x"
    )
    assert dispatch(ROUTES, HttpOptions(), _req("GET", "/nope")).status == 404
    assert dispatch(ROUTES, HttpOptions(), _req("GET", "/echo")).status == 405


def test_handler_errors_become_json() -> None:
    resp = dispatch(ROUTES, HttpOptions(), _req("GET", "/fail"))
    assert resp.status == 422
    assert json.loads(resp.body) == {"error": "bad thing in field 'x'", "status": 422}


def test_unexpected_errors_do_not_leak_their_message() -> None:
    resp = dispatch(ROUTES, HttpOptions(), _req("GET", "/boom"))
    assert resp.status == 500
    assert b"secret" not in resp.body


def test_bearer_token_required_except_health() -> None:
    opts = HttpOptions(auth_token="s3cret")
    assert dispatch(ROUTES, opts, _req("POST", "/echo")).status == 401
    ok = dispatch(ROUTES, opts, _req("POST", "/echo", headers={"authorization": "Bearer s3cret"}))
    assert ok.status == 200
    assert dispatch(ROUTES, opts, _req("GET", "/healthz")).status == 200


def test_bad_json_body_is_a_400() -> None:
    resp = dispatch(ROUTES, HttpOptions(), _req("POST", "/echo", b"{nope"))
    assert resp.status == 400
    assert b"not valid JSON" in resp.body


def test_decompress_limits_gzip_bombs() -> None:
    bomb = gzip.compress(b"\0" * 1_000_000)
    with pytest.raises(HttpError, match="exceeds the limit of 1000 bytes"):
        decompress(bomb, "gzip", 1000)
    assert decompress(gzip.compress(b"abc"), "gzip", 1000) == b"abc"
    with pytest.raises(HttpError, match="unsupported Content-Encoding 'br'"):
        decompress(b"x", "br", 10)


@pytest.fixture
def server() -> Iterator[RunningHttpServer]:
    srv = start_http_server("127.0.0.1", 0, ROUTES, HttpOptions(max_body=1000))
    yield srv
    srv.stop()


def test_real_server_round_trip(server: RunningHttpServer) -> None:
    body = gzip.compress(json.dumps({"a": 1}).encode())
    req = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/echo?n=5",
        data=body,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert json.loads(resp.read()) == {"path": "/echo", "n": "5", "body": {"a": 1}}


def test_real_server_rejects_large_bodies(server: RunningHttpServer) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}/echo", data=b"x" * 5000)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 413
