"""`meshlens gate` end to end in a subprocess (real clock, short intervals), Slack-style
notifications to a real local HTTP server, and the Prometheus metrics."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from meshlens.analytics.catalog import connect
from meshlens.analytics.gate.metrics import gate_metric_families, metric_collectors
from meshlens.analytics.gate.model import Decision, Judgement
from meshlens.analytics.gate.record import notification_text, notify, verdict_row
from meshlens.analytics.gate.state import GateState, queue_command, save_state

ROOT = Path(__file__).resolve().parents[3]


class Hook:
    """A webhook receiver on 127.0.0.1:0 recording each JSON body."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status = status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                outer.bodies.append(json.loads(self.rfile.read(n)))
                self.send_response(outer.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/XXX"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.stop()


def meshlens(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshlens.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )


def test_notification_is_slack_compatible(hook: Hook) -> None:
    st = GateState(
        "reviews",
        service="reviews.default.svc.cluster.local",
        phase="progressing",
        canary_weight=20,
    )
    j = Judgement("fail", 0.0, "error rate up", {"metrics": [{"name": "error-rate"}]})
    row = verdict_row(
        st,
        Decision("hold", None, "fail at 20%; failed checks 1/2", j),
        baseline="v1",
        canary="v2",
        now=1.7e9,
        weight_before=20,
        applied=None,
    )
    assert notify(hook.url, row, 5.0) is True
    assert hook.bodies == [{"text": notification_text(row)}]
    text = hook.bodies[0]["text"]
    assert "*reviews*" in text and "hold" in text and "20%" in text and "verdict fail" in text
    hook.status = 500
    assert notify(hook.url, row, 5.0) is False  # logged, never raised
    assert notify("http://127.0.0.1:1/closed", row, 1.0) is False


def test_metric_families(tmp_path: Path) -> None:
    save_state(
        tmp_path,
        GateState(
            "reviews",
            service="reviews.default.svc.cluster.local",
            phase="progressing",
            canary_weight=30,
            last_score=97.5,
            failed_checks=1,
            analyses=4,
        ),
    )
    save_state(
        tmp_path,
        GateState(
            "ratings", service="ratings.default.svc.cluster.local", phase="failed", canary_weight=0
        ),
    )
    names = [f.name for f in gate_metric_families(tmp_path)]
    assert names[:3] == [
        "meshlens_gate_canary_weight",
        "meshlens_gate_score",
        "meshlens_gate_phase",
    ]
    reg = CollectorRegistry()
    for c in metric_collectors(tmp_path):
        reg.register(c)
    text = generate_latest(reg).decode()
    assert (
        'meshlens_gate_canary_weight{rollout="reviews",service="reviews.default.svc.'
        'cluster.local"} 30.0'
    ) in text
    assert (
        'meshlens_gate_score{rollout="reviews",service="reviews.default.svc.cluster.local"}'
        " 97.5" in text
    )
    assert (
        'meshlens_gate_phase{phase="progressing",rollout="reviews",service="reviews.default'
        '.svc.cluster.local"} 1.0'
    ) in text
    assert (
        'meshlens_gate_phase{phase="failed",rollout="reviews",service="reviews.default.svc.'
        'cluster.local"} 0.0'
    ) in text
    assert (
        'meshlens_gate_phase{phase="failed",rollout="ratings",service="ratings.default.svc.'
        'cluster.local"} 1.0'
    ) in text


def test_cli_run_status_and_commands(tmp_path: Path, hook: Hook) -> None:
    data = tmp_path / "data"
    cfg = tmp_path / "rollout.yaml"
    # An idle canary (no traffic at all) with a short progress deadline: holds inconclusive,
    # then rolls back when the deadline passes. Actuator none: advice only.
    cfg.write_text(f"""
rollout: details
service: details.default.svc.cluster.local
baseline: v1
canary: v2
analysis: {{interval: 0.5s, stepWeights: [10, 50], progressDeadline: 3s}}
notify: {{url: "{hook.url}", timeout: 2s}}
actuator: {{type: none}}
""")
    run = meshlens("gate", "run", "--config", str(cfg), "--data-dir", str(data), "--poll", "0.1")
    assert run.returncode == 1, run.stdout + run.stderr  # failed (rolled back)
    assert "start -> initializing" not in run.stdout
    lines = run.stdout.splitlines()
    assert "details: start -> progressing, canary 10%" in run.stdout
    # in between only holds on inconclusive verdicts (how many depends on the machine's speed)
    assert all(
        "hold -> progressing, canary 10%, verdict inconclusive" in ln for ln in lines[2:-1]
    ), lines
    assert "rollback -> failed, canary 0%" in lines[-1] and "no progress" in lines[-1]
    status = meshlens(
        "gate", "status", "--rollout", "details", "--format", "json", "--data-dir", str(data)
    )
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    assert st["phase"] == "failed" and st["canary_weight"] == 0 and st["running"] is False
    texts = [b["text"] for b in hook.bodies]
    assert len(texts) == len(lines) - 1  # one notification per decision (not the banner)
    assert "rollback" in texts[-1]
    conn = connect(data)
    try:
        rows = conn.execute(
            "SELECT action, phase, canary_weight, dry_run FROM verdicts ORDER BY ts"
        ).fetchall()
    finally:
        conn.close()
    assert rows[0] == ("start", "progressing", 10, False)
    assert rows[-1] == ("rollback", "failed", 0, False)
    # text status and a queued command when nothing runs
    text = meshlens("gate", "status", "--data-dir", str(data))
    assert "details: failed, canary 0%" in text.stdout
    queued = meshlens("gate", "pause", "--rollout", "details", "--data-dir", str(data))
    assert queued.returncode == 0 and "pause queued for rollout details" in queued.stdout
    missing = meshlens("gate", "abort", "--data-dir", str(data))
    assert missing.returncode == 2 and "--rollout" in missing.stderr


def test_cli_dry_run_and_promote_command(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = tmp_path / "rollout.yaml"
    gitops = tmp_path / "vs.yaml"
    original = (ROOT / "deploy/gate/gitops/productpage.yaml").read_text()
    gitops.write_text(original)
    cfg.write_text("""
rollout: productpage
service: productpage.bookinfo.svc.cluster.local
baseline: v1
canary: v2
analysis: {interval: 0.3s, stepWeights: [10, 50]}
actuator: {type: file, path: vs.yaml, virtualService: productpage, host: productpage,
           routes: [primary]}
""")
    # A promote queued before the gate starts: applied on its first turn. Dry-run: the file
    # must not change although the gate walks to "succeeded".
    queue_command(data, "productpage", "promote", by="test")
    run = meshlens("gate", "run", "--config", str(cfg), "--data-dir", str(data), "--dry-run")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "[dry-run]" in run.stdout and "promote -> succeeded, canary 100%" in run.stdout
    assert gitops.read_text() == original
    conn = connect(data)
    try:
        assert conn.execute("SELECT bool_and(dry_run) FROM verdicts").fetchone() == (True,)
    finally:
        conn.close()
    # for real: the same queued promote rewrites the GitOps file to 0/100
    (data / "gate" / "productpage.json").unlink()
    queue_command(data, "productpage", "promote", by="test")
    run = meshlens("gate", "run", "--config", str(cfg), "--data-dir", str(data))
    assert run.returncode == 0, run.stdout + run.stderr
    new = gitops.read_text()
    assert new != original and len(new.splitlines()) == len(original.splitlines())
    assert "      weight: 0   # stable" in new and "      weight: 100     # canary" in new
