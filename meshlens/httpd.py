"""A small threaded HTTP server with a route table: the transport under the OTLP/HTTP receiver
and the API port. Handlers are plain functions Request -> Response, so the logic behind a route
is testable without a socket (the prometheus_client `generate_latest` / adapter split).

Errors: a handler raises `HttpError(status, message)` for a clean JSON error
`{"error": message, "status": status}`; anything else becomes a 500 with the exception's
message (never a traceback, never a secret).

Before a body is read: the bearer token, and without a token the browser guards of
`collector.http_guard` (HttpOptions.same_origin). Bodies are read whole or not at all
(`collector.http_body`: Content-Length or chunked, limit applied while reading). Each connection
has an idle/read timeout and each server a cap on open connections, so idle sockets cannot take
the process's file descriptors. A client that disconnects is logged at debug, without traceback.
"""

from __future__ import annotations

import gzip
import hmac
import json
import logging
import math
import socket
import ssl
import sys
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from meshlens.collector.http_body import BodyError, body_length, read_body
from meshlens.collector.http_guard import DEFAULT_ALLOWED_HOSTS, same_origin_refusal

log = logging.getLogger(__name__)

UNAUTHENTICATED_PATHS = frozenset({"/healthz", "/readyz"})
# A refused request's body up to this size is read and dropped, so the client gets the answer
# on a reusable connection instead of a reset; a larger one closes the connection instead.
DRAIN_LIMIT = 1024 * 1024


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
        except RecursionError:
            raise HttpError(400, "request body is JSON nested too deeply") from None


def json_safe(obj: Any) -> Any:
    """`obj` with every NaN/Infinity float as None: JSON has no such numbers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def json_bytes(obj: Any) -> bytes:
    """Always valid JSON (RFC 8259): non-finite floats become null, other types str()."""
    try:
        return json.dumps(obj, default=str, allow_nan=False).encode()
    except ValueError:  # a NaN or Infinity somewhere: rare, so only then walk the object
        return json.dumps(json_safe(obj), default=str, allow_nan=False).encode()


@dataclass(frozen=True, slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, obj: Any, status: int = 200) -> Response:
        return cls(status, json_bytes(obj), "application/json")

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
    # A connection silent this long (between requests or mid-request) is closed (0 = never).
    idle_timeout_s: float = 60.0
    # Connections beyond this are answered 503 and closed at once (0 = no cap).
    max_connections: int = 256
    # Without auth_token: Host, Origin and Content-Type checks against browsers (http_guard).
    same_origin: bool = False
    allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS


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


def error_response(
    status: int, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    """The JSON error every refusal and failed handler answers with."""
    body = Response.json({"error": message, "status": status}, status)
    return Response(status, body.body, body.content_type, headers)


def refusal(
    options: HttpOptions, method: str, path: str, headers: Mapping[str, str], has_body: bool
) -> Response | None:
    """The answer to a request refused on its headers alone (token, browser guards), else None.
    Runs before the body is read or decompressed."""
    if path in options.open_paths:
        return None
    if options.auth_token:
        got = headers.get("authorization", "")
        if not hmac.compare_digest(got.encode(), f"Bearer {options.auth_token}".encode()):
            return error_response(401, "missing or invalid bearer token")
        return None
    if options.same_origin:
        refused = same_origin_refusal(method, headers, options.allowed_hosts, has_body)
        if refused is not None:
            return error_response(refused.status, refused.message)
    return None


def dispatch(routes: Sequence[Route], options: HttpOptions, req: Request) -> Response:
    """Route a request: auth check, handler, error mapping. Pure apart from the handler."""
    refused = refusal(options, req.method, req.path, req.headers, bool(req.body))
    if refused is not None:
        return refused
    candidates = [r for r in routes if r.path == req.path or r.matches(req.method, req.path)]
    route = next((r for r in candidates if r.matches(req.method, req.path)), None)
    if route is None:
        if candidates:
            return error_response(405, f"method {req.method} not allowed")
        return error_response(404, f"no such path {req.path}")
    try:
        return route.handler(req)
    except HttpError as exc:
        return error_response(exc.status, exc.message, tuple(exc.headers.items()))
    except Exception as exc:
        log.exception("%s %s failed", req.method, req.path)
        return error_response(500, f"internal error: {type(exc).__name__}")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    body_withheld = False  # "100 Continue" was not sent: the client keeps its body

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.server.options.name, format % args)

    def setup(self) -> None:
        # Reads and writes on the connection time out: an idle client cannot hold it forever.
        idle = self.server.options.idle_timeout_s
        if idle > 0:
            self.request.settimeout(idle)
        super().setup()

    def handle_expect_100(self) -> bool:
        # A request refused on its headers gets the refusal instead of "100 Continue", so the
        # client does not send (and we do not read) the body. _handle answers it.
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = urlsplit(self.path).path
        if refusal(self.server.options, self.command, path, headers, True) is not None:
            self.body_withheld = True
            return True
        return super().handle_expect_100()

    def _handle(self) -> None:
        opts = self.server.options
        split = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        all_values: dict[str, list[str]] = {}
        for k, v in self.headers.items():
            all_values.setdefault(k.lower(), []).append(v)
        try:
            length = body_length(all_values)
        except BodyError as exc:
            self.close_connection = True
            self._send(error_response(exc.status, exc.message))
            return
        refused = refusal(opts, self.command, split.path, headers, length != 0)
        withheld, self.body_withheld = self.body_withheld, False
        if refused is not None:
            self._drain(None if withheld else length)
            self._send(refused)
            return
        try:
            body = read_body(self.rfile, length, opts.max_body)
            body = decompress(body, headers.get("content-encoding", ""), opts.max_body)
        except BodyError as exc:
            # Nothing of a short or bad body reaches a handler: a prefix stored and
            # acknowledged would be stored again by the client's retry.
            self.close_connection = True
            log.debug("%s: %s %s: %s", opts.name, self.command, split.path, exc.message)
            self._send(error_response(exc.status, exc.message))
            return
        except HttpError as exc:
            self._send(error_response(exc.status, exc.message))
            return
        except OSError as exc:  # timed out or reset mid-body: the client is gone
            self.close_connection = True
            log.debug("%s: %s %s: body not received: %r", opts.name, self.command, split.path, exc)
            return
        req = Request(self.command, split.path, parse_qs(split.query), headers, body)
        self._send(dispatch(self.server.routes, opts, req))

    def _drain(self, length: int | None) -> None:
        """Drop the unread body of a refused request, or mark the connection for closing
        (None: chunked, or withheld by a client that expected "100 Continue")."""
        if length is None or length > DRAIN_LIMIT:
            self.close_connection = True
            return
        try:
            if len(self.rfile.read(length)) != length:
                self.close_connection = True
        except OSError:
            self.close_connection = True

    def _send(self, resp: Response) -> None:
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(resp.body)))
            for k, v in resp.headers:
                self.send_header(k, v)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(resp.body)
        except OSError as exc:  # the client went away before its answer
            self.close_connection = True
            log.debug("%s: answer not sent: %r", self.server.options.name, exc)

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
        cap = options.max_connections
        self._slots = threading.BoundedSemaphore(cap) if cap > 0 else None
        self.refused_connections = 0
        super().__init__(addr, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if self._slots is not None and not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            if self._slots is not None:
                self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            if self._slots is not None:
                self._slots.release()

    def _refuse(self, request: Any) -> None:
        """Over the cap: a 503 if it fits the socket buffer at once (plain TCP), then close."""
        self.refused_connections += 1
        level = logging.WARNING if self.refused_connections in (1, 1000) else logging.DEBUG
        log.log(
            level,
            "%s: %d connections open, the cap (--http-max-connections); refused %d so far",
            self.options.name,
            self.options.max_connections,
            self.refused_connections,
        )
        if not isinstance(request, ssl.SSLSocket):
            try:
                request.setblocking(False)
                request.send(_OVER_CAP)
                request.shutdown(socket.SHUT_WR)
                # Request bytes left unread at close() make the kernel answer with a reset,
                # which can destroy the 503 before the client reads it: drop what has arrived
                # (bounded, without waiting: this runs in the accept loop).
                for _ in range(16):
                    if not request.recv(65536):
                        break
            except OSError:
                pass
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # reset, broken pipe, timeout, TLS alert: the client's
            log.debug("%s: connection from %s ended: %r", self.options.name, client_address, exc)
            return
        log.error("%s: request from %s failed", self.options.name, client_address, exc_info=True)

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


_OVER_CAP = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 53\r\n\r\n"
    b'{"error": "too many open connections", "status": 503}'
)


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
    if opts.same_origin and host not in ("", "0.0.0.0", "::"):
        opts = replace(opts, allowed_hosts=(*opts.allowed_hosts, host))  # the bind address
    server = _Server((host, port), routes, opts)
    if opts.tls_cert:
        server.tls = tls_context(opts.tls_cert, opts.tls_key, opts.tls_client_ca)
    # A short poll interval: shutdown() waits for the loop to notice (0.5 s by default).
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name=f"{opts.name}-http", daemon=True
    )
    thread.start()
    return RunningHttpServer(server, thread, server.server_address[1])
