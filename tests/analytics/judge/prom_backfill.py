"""A real Prometheus over backfilled data, for tests: OpenMetrics text -> TSDB blocks
(`promtool tsdb create-blocks-from openmetrics`) -> /usr/bin/prometheus on a free loopback port,
ready when /-/ready answers 200. The same recipe as tests/analytics/test_prometheus_source.py
(whose `free_port` this reuses), with the series given by the caller."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.analytics.test_prometheus_source import free_port

READY_TIMEOUT_S = 30.0


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> bool:
    """True once /-/ready answers; False if the process exited (e.g. the port was taken).
    Polls with proc.wait as the pause, so an exit is seen at once."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if _ready(url):
            return True
        try:
            proc.wait(timeout=0.05)
            return False
        except subprocess.TimeoutExpired:
            pass
    raise AssertionError(
        f"prometheus not ready after {READY_TIMEOUT_S:g}s:\n{log.read_text()[-2000:]}"
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def backfilled_prometheus(root: Path, openmetrics: str) -> Iterator[str]:
    """Yield the URL of a Prometheus holding `openmetrics` (text ending in "# EOF"); stops it
    (SIGTERM, then SIGKILL) on exit."""
    binary, promtool = shutil.which("prometheus"), shutil.which("promtool")
    assert binary and promtool, (
        "prometheus and promtool must be installed (apt-get install prometheus)"
    )
    (root / "input.om").write_text(openmetrics)
    data = root / "data"
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(root / "input.om"), str(data)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (root / "prometheus.yml").write_text("global:\n  scrape_interval: 1h\nscrape_configs: []\n")
    log_path = root / "prometheus.log"
    for _attempt in range(3):  # a free port can be taken between free_port() and the bind
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={root / 'prometheus.yml'}",
                    f"--storage.tsdb.path={data}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=30d",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                if _wait_ready(proc, url, log_path):
                    yield url
                    return
            finally:
                _stop(proc)
    raise AssertionError(f"prometheus did not start:\n{log_path.read_text()[-2000:]}")
