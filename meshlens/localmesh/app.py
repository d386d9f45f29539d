"""A tiny HTTP app to put behind a sidecar (tests, demo): answers every request with JSON.

`/status/<code>` answers with that status; `/delay/<ms>` sleeps first; anything else is 200.
Runs in a daemon thread of the calling process (ThreadingHTTPServer on 127.0.0.1).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    server: _AppServer
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        parts = self.path.split("?", 1)[0].strip("/").split("/")
        status = 200
        if len(parts) == 2 and parts[0] == "status" and parts[1].isdigit():
            status = int(parts[1])
        elif len(parts) == 2 and parts[0] == "delay" and parts[1].isdigit():
            time.sleep(int(parts[1]) / 1000)
        body = json.dumps(
            {"service": self.server.service_name, "path": self.path, "status": status}
        ).encode()
        self.server.requests += 1
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class _AppServer(ThreadingHTTPServer):
    daemon_threads = True
    service_name = ""
    requests = 0


class TinyApp:
    """`with TinyApp("reviews-v1") as app: app.port`"""

    def __init__(self, service_name: str, port: int = 0) -> None:
        self.server = _AppServer(("127.0.0.1", port), _Handler)
        self.server.service_name = service_name
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, daemon=True, name=f"tinyapp-{service_name}"
        )

    @property
    def requests(self) -> int:
        return self.server.requests

    def start(self) -> TinyApp:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> TinyApp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
