"""Shared fixtures: a real `meshlens serve` (subprocess) and an in-process Collector.

    running_serve            a `meshlens serve` subprocess on ports 0 with a tmp data dir
    serve_factory(*args)     the same with extra flags (auth, TLS, budgets), any number of them
    collector_factory(*args) an in-process meshlens.server.Collector (fast; same code path)

Readiness is awaited, never slept for: `<data_dir>/serve.json` naming our pid, then /readyz 200.
Teardown sends SIGTERM and checks the clean-shutdown contract (exit code 0).
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60.0
# Short segment roll so rows become visible quickly in tests.
TEST_FLUSH_INTERVAL = "0.2s"


def http_get(
    url: str, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers or {})
    # With --tls-cert the API port speaks TLS; probes here only need the status.
    context = ssl._create_unverified_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return resp.status, resp.read(), dict(resp.headers.items())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers.items())


def http_post(
    url: str, body: bytes, headers: dict[str, str], timeout: float = 10.0, context: Any = None
) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    if context is None and url.startswith("https:"):
        context = ssl._create_unverified_context()  # status checks only; TLS tests pass one
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return resp.status, resp.read(), dict(resp.headers.items())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers.items())


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll `predicate` until it returns a truthy value (returned) or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class ServeProcess:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    grpc_port: int = 0
    http_port: int = 0
    api_port: int = 0
    stopped_rc: int | None = field(default=None)
    tls: bool = False  # started with --tls-cert: the API port speaks TLS too

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def api_url(self, path: str) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.api_port}{path}"

    def otlp_url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.http_port}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 60.0, sig: int = signal.SIGTERM) -> int:
        """Signal the server and wait for it to exit; returns the exit code."""
        if self.stopped_rc is not None:
            return self.stopped_rc
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.stopped_rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"meshlens serve did not exit within {timeout}s:\n{self.log()}"
            ) from None
        return self.stopped_rc


def _serve_env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHLENS_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def wait_until_ready(sp: ServeProcess, timeout: float) -> None:
    """Wait for the serve.json this process wrote (its real ports), then for /readyz."""
    state = sp.data_dir / "serve.json"

    def read_state() -> dict[str, int] | None:
        if sp.proc.poll() is not None:
            raise AssertionError(f"meshlens serve exited with {sp.proc.returncode}:\n{sp.log()}")
        try:
            doc = json.loads(state.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return doc if doc.get("pid") == sp.proc.pid else None  # not a stale file

    doc = wait_for(read_state, timeout, "serve.json")
    sp.grpc_port, sp.http_port, sp.api_port = doc["grpc_port"], doc["http_port"], doc["api_port"]
    wait_for(lambda: http_get(sp.api_url("/readyz"))[0] == 200, timeout, "/readyz")


def start_serve(
    data_dir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = READY_TIMEOUT_S
) -> ServeProcess:
    """Start `meshlens serve` on ephemeral ports and wait until it is ready."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}-serve.log"
    cmd = [
        sys.executable,
        "-m",
        "meshlens",
        "serve",
        "--data-dir",
        str(data_dir),
        "--grpc-port",
        "0",
        "--http-port",
        "0",
        "--api-port",
        "0",
        "--flush-interval",
        TEST_FLUSH_INTERVAL,
        *args,
    ]
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO, env=_serve_env(env)
        )
    sp = ServeProcess(proc, data_dir, log_path, tls="--tls-cert" in args)
    try:
        wait_until_ready(sp, timeout)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    return sp


@pytest.fixture
def serve_factory(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    started: list[ServeProcess] = []

    def factory(
        *args: str, data_dir: Path | None = None, env: dict[str, str] | None = None
    ) -> ServeProcess:
        d = data_dir or tmp_path / f"data{len(started)}"
        sp = start_serve(d, *args, env=env)
        started.append(sp)
        return sp

    yield factory
    failures = []
    for sp in started:
        rc = sp.stop()
        if rc != 0:
            failures.append(f"meshlens serve exited with {rc}:\n{sp.log()}")
    assert not failures, "\n".join(failures)


@pytest.fixture
def running_serve(serve_factory: Callable[..., ServeProcess]) -> ServeProcess:
    """A `meshlens serve` subprocess on ephemeral ports, stopped with SIGTERM at teardown."""
    return serve_factory()


@pytest.fixture
def collector_factory(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """In-process collectors: factory(*serve_flags, data_dir=None) -> started Collector
    (ports in `.ports`). Stopped (flushed) at teardown."""
    from meshlens.cli import build_parser
    from meshlens.server import Collector

    started: list[Any] = []

    def factory(*args: str, data_dir: Path | None = None) -> Any:
        d = data_dir or tmp_path / f"inproc{len(started)}"
        parser, _module = build_parser("serve")
        ns = parser.parse_args(
            [
                "--data-dir",
                str(d),
                "--grpc-port",
                "0",
                "--http-port",
                "0",
                "--api-port",
                "0",
                "--flush-interval",
                TEST_FLUSH_INTERVAL,
                "--decode-workers",
                "0",
                *args,
            ]
        )
        c = Collector(ns)
        started.append(c)
        c.start()
        return c

    yield factory
    for c in started:
        c.stop(grace_s=2.0)
