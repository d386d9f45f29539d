"""A real browser: `meshlens ui` serves the app, headless Chromium loads the Mesh page, the
service graph renders as SVG (Graphviz nodes and edges), and the screenshot is not blank."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.dashboards.browser import Browser
from tests.dashboards.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ui_url(seeded_dir: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHLENS_")}
    env["PYTHONPATH"] = str(REPO)
    log = open(tmp_path / "ui.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meshlens",
            "ui",
            "--port",
            str(port),
            "--data-dir",
            str(seeded_dir),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a loaded CI machine
        while True:
            assert proc.poll() is None, (tmp_path / "ui.log").read_text()
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
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.integration
def test_mesh_page_renders_the_graph_in_chromium(ui_url: str, tmp_path: Path) -> None:
    browser = Browser(tmp_path / "chromium")
    try:
        browser.goto(ui_url + "/")
        nodes = browser.wait_for(
            "document.querySelectorAll('[data-testid=\"stGraphVizChart\"] svg g.node').length", 90
        )
        edges = browser.evaluate(
            "document.querySelectorAll('[data-testid=\"stGraphVizChart\"] svg g.edge').length"
        )
        labels = browser.evaluate(
            "Array.from(document.querySelectorAll('[data-testid=\"stGraphVizChart\"] svg g.node')"
            ").map(n => n.textContent).join('|')"
        )
        errors = browser.evaluate(
            "document.querySelectorAll('[data-testid=\"stException\"]').length"
        )
        time.sleep(0.5)  # let the graph finish its transition before the picture
        shot = browser.screenshot(tmp_path / "mesh.png")
    finally:
        browser.close()
    assert errors == 0
    assert nodes >= 8 and edges >= 8, (nodes, edges)
    assert "productpage" in labels and "reviews" in labels
    img = Image.open(shot).convert("RGB")
    assert img.size == (1400, 900)
    # Not a blank page: plenty of pixels away from the white background, in several colours
    # (the health fills of the nodes).
    pixels = np.asarray(img, dtype=np.int32)
    busy = int((pixels.sum(axis=2) < 600).sum())
    assert busy > 0.02 * pixels.shape[0] * pixels.shape[1], busy
    colours = {tuple(c) for c in (pixels[::4, ::4] // 32).reshape(-1, 3).tolist()}
    assert len(colours) >= 6, colours
