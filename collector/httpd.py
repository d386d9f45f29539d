"""A small threaded HTTP server with a route table: the transport under the OTLP/HTTP receiver
and the API port. Handlers are plain functions Request -> Response, so the logic behind a route
is testable without a socket (the prometheus_client `generate_latest` / adapter split).

Errors: a handler raises `HttpError(status, message)` for a clean JSON error
`{"error": message, "status": status}`; anything else becomes a 500 with the exception's
message (never a traceback, never a secret).
"""

from __future__ import annotations

import gzip
import hmac
import json
import logging
import ssl
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

UNAUTHENTICATED_PATHS = frozenset({"/healthz", "/readyz"})


class HttpError(Exception):
    """Raised by handlers: becomes a JSON error response with this status."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"request body is not valid JSON: {exc}") from None


@dataclass(frozen=True, slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, obj: Any, status: int = 200) -> Response:
        return cls(status, json.dumps(obj, default=str).encode(), "application/json")

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain") -> Response:
        return cls(status, text.encode(), content_type + "; charset=utf-8")


Handler = Callable[[Request], Response]


@dataclass(frozen=True, slots=True)
class Route:
    """`path` matches exactly, or as a prefix when it ends with '/*'."""

    method: str
    path: str
    handler: Handler

    def matches(self, method: str, path: str) -> bool:
        if self.method != method and not (self.method == "GET" and method == "HEAD"):
            return False
        if self.path.endswith("/*"):
            return path.startswith(self.path[:-1])
        return path == self.path


@dataclass(frozen=True, slots=True)
class HttpOptions:
    auth_token: str = ""
    max_body: int = 16 * 1024 * 1024
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    name: str = "http"
    open_paths: frozenset[str] = field(default=UNAUTHENTICATED_PATHS)


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo Content-Encoding gzip/deflate without letting a small bomb exceed `limit`."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise HttpError(415, f"unsupported Content-Encoding {encoding!r} (use gzip or none)")
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(body, limit + 1)
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise HttpError(400, f"body is not valid {encoding}: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise HttpError(413, f"decompressed body exceeds the limit of {limit} bytes")
    return out


def dispatch(routes: Sequence[Route], options: HttpOptions, req: Request) -> Response:
    """Route a request: auth check, handler, error mapping. Pure apart from the handler."""
    if options.auth_token and req.path not in options.open_paths:
        got = req.headers.get("authorization", "")
        if not hmac.compare_digest(got.encode(), f"Bearer {options.auth_token}".encode()):
            return Response.json({"error": "missing or invalid bearer token", "status": 401}, 401)
    candidates = [r for r in routes if r.path == req.path or r.matches(req.method, req.path)]
    route = next((r for r in candidates if r.matches(req.method, req.path)), None)
    if route is None:
        if candidates:
            return Response.json({"error": f"method {req.method} not allowed", "status": 405}, 405)
        return Response.json({"error": f"no such path {req.path}", "status": 404}, 404)
    try:
        return route.handler(req)
    except HttpError as exc:
        resp = Response.json({"error": exc.message, "status": exc.status}, exc.status)
        return Response(resp.status, resp.body, resp.content_type, tuple(exc.headers.items()))
    except Exception as exc:
        log.exception("%s %s failed", req.method, req.path)
        return Response.json({"error": f"internal error: {type(exc).__name__}", "status": 500}, 500)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.server.options.name, format % args)

    def _handle(self) -> None:
        opts = self.server.options
        split = urlsplit(self.path)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._send(Response.json({"error": "bad Content-Length", "status": 400}, 400))
            return
        if length > opts.max_body:
            self.close_connection = True
            self._send(
                Response.json(
                    {
                        "error": f"body of {length} bytes exceeds the limit of "
                        f"{opts.max_body} bytes",
                        "status": 413,
                    },
                    413,
                )
            )
            return
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            body = decompress(body, headers.get("content-encoding", ""), opts.max_body)
        except HttpError as exc:
            self._send(Response.json({"error": exc.message, "status": exc.status}, exc.status))
            return
        req = Request(self.command, split.path, parse_qs(split.query), headers, body)
        self._send(dispatch(self.server.routes, opts, req))

    def _send(self, resp: Response) -> None:
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        for k, v in resp.headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's 5 drops connection bursts (clients then retry)
    handshake_timeout_s = 10.0

    def __init__(self, addr: tuple[str, int], routes: Sequence[Route], options: HttpOptions):
        self.routes = list(routes)
        self.options = options
        self.tls: ssl.SSLContext | None = None
        super().__init__(addr, _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        if self.tls is not None:
            # Wrap without the handshake: it runs in the connection's own thread
            # (finish_request), so a client that never speaks TLS cannot stall accept().
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(self.handshake_timeout_s)
                request.do_handshake()
                request.settimeout(None)
            except (OSError, ValueError) as exc:
                log.debug(
                    "%s: TLS handshake from %s failed: %s",
                    self.options.name,
                    client_address,
                    type(exc).__name__,
                )
                return
        super().finish_request(request, client_address)


@dataclass
class RunningHttpServer:
    server: ThreadingHTTPServer
    thread: threading.Thread
    port: int

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def tls_context(cert: str, key: str, client_ca: str = "") -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def start_http_server(
    host: str, port: int, routes: Sequence[Route], options: HttpOptions | None = None
) -> RunningHttpServer:
    """Bind (port 0 = ephemeral), serve in a daemon thread, return the handle."""
    opts = options or HttpOptions()
    server = _Server((host, port), routes, opts)
    if opts.tls_cert:
        server.tls = tls_context(opts.tls_cert, opts.tls_key, opts.tls_client_ca)
    # A short poll interval: shutdown() waits for the loop to notice (0.5 s by default).
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name=f"{opts.name}-http", daemon=True
    )
    thread.start()
    return RunningHttpServer(server, thread, server.server_address[1])
