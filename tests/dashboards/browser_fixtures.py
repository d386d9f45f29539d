"""Session fixtures of the browser tests: `ui_url` (`meshlens ui` on the seeded store) and
`browser` (one headless Chromium), made available to every test here by conftest.py (one
Playwright per process: two would clash in one event loop).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshlens.localmesh.ports import free_port
from tests.dashboards.browser import Browser

REPO = Path(__file__).resolve().parents[2]
# The sign-in token `meshlens ui` is started with and the browser presents (`?token=`).
UI_TOKEN = secrets.token_urlsafe(16)
HEALTHY_WITHIN_S = 120.0  # a loaded CI machine


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Streamlit and anything it started: the whole process group (it is its own session)."""
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue


def clean_env() -> dict[str, str]:
    """This process's environment without MESHLENS_* settings, with the repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHLENS_")}
    env["PYTHONPATH"] = str(REPO)
    return env


@contextlib.contextmanager
def serve_ui(argv: list[str], env: dict[str, str], log_path: Path, port: int) -> Iterator[str]:
    """A Streamlit server from `argv` on `port`, healthy, until the block ends (its whole
    process group)."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + HEALTHY_WITHIN_S
            while True:
                assert proc.poll() is None, log_path.read_text()
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                        if r.read().strip() == b"ok":
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "streamlit did not become healthy"
                time.sleep(0.2)
            yield url
        finally:
            _stop(proc)


@pytest.fixture(scope="session")
def ui_url(seeded_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """http://127.0.0.1:PORT of `meshlens ui` serving the seeded store, healthy."""
    port = free_port()
    env = {**clean_env(), "MESHLENS_UI_TOKEN": UI_TOKEN}
    argv = [sys.executable, "-m", "meshlens", "ui", "--port", str(port)]
    log_path = tmp_path_factory.mktemp("ui") / "ui.log"
    with serve_ui([*argv, "--data-dir", str(seeded_dir)], env, log_path, port) as url:
        yield url


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with Browser(token=UI_TOKEN) as b:
        yield b
