"""`meshlens demo` end to end, headless: the real local mesh, the collector, the gate.

The errors scenario (5% of the canary's requests fail) must roll the canary back: at the first
step (10%) the canary gets ~2.4 requests/s, so the judge usually has the evidence after a minute
or two. How long it takes is random (a sequential test stops when the evidence is in), so the
test waits for the gate's `failed` phase with a generous deadline rather than for a fixed time,
then stops the demo as Ctrl-C would.
While the demo runs, `meshlens sql` answers and the bookinfo graph has mTLS on its edges. A
second start on the same data dir or ports is refused with a clear message.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshlens.localmesh.ports import free_port

pytestmark = pytest.mark.integration


def _meshlens(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshlens", *args], capture_output=True, text=True, timeout=timeout
    )


def _distinct_ports(n: int) -> list[str]:
    return [str(free_port()) for _ in range(n)]


def _wait_for_phase(
    data: Path, demo: subprocess.Popen[str], want: str, deadline: float
) -> dict[str, object]:
    """The rollout's status once its phase is `want`, or the last status seen at the deadline."""
    status: dict[str, object] = {}
    while time.monotonic() < deadline and demo.poll() is None:
        out = _meshlens(
            "gate", "status", "--data-dir", str(data), "--rollout", "reviews-v3", "--format", "json"
        )
        if out.returncode == 0:
            status = json.loads(out.stdout)
            if status.get("phase") == want:
                return status
        time.sleep(3)
    return status


def test_demo_errors_scenario_rolls_back_and_sql_answers_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    ports = _distinct_ports(3)
    cmd = [
        sys.executable,
        "-m",
        "meshlens",
        "demo",
        "--data-dir",
        str(data),
        "--no-ui",
        "--scenario",
        "errors",
        "--duration",
        "480",
        "--interval",
        "5",
        "--grpc-port",
        ports[0],
        "--http-port",
        ports[1],
        "--api-port",
        ports[2],
    ]
    demo = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 150
        rows: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            if demo.poll() is not None:
                output, _ = demo.communicate()
                pytest.fail(f"the demo exited early with {demo.returncode}:\n{output}")
            out = _meshlens(
                "sql",
                "--data-dir",
                str(data),
                "--format",
                "json",
                "select destination_workload w, count(*) n, "
                "avg(mtls::int) m from requests where reporter = 'destination' "
                "group by 1 order by 1",
            )
            if out.returncode == 0:
                rows = json.loads(out.stdout)
                if {r["w"] for r in rows} >= {
                    "productpage-v1",
                    "details-v1",
                    "ratings-v1",
                    "reviews-v2",
                    "reviews-v3",
                }:
                    break
            time.sleep(2)
        assert rows, "meshlens sql found no requests while the demo ran"
        assert all(r["m"] == 1 for r in rows), rows  # every sidecar-to-sidecar hop is mTLS
        # Every path (gRPC ALS, OTel ALS) names the reporting proxy's own canonical service, as
        # Istio derives it (its labels, else the workload's name): no phantom `unknown` nodes.
        local_unknown = _meshlens(
            "sql",
            "--data-dir",
            str(data),
            "--format",
            "json",
            "select origin, reporter, count(*) n from requests where "
            "(reporter = 'destination' and destination_canonical_service = 'unknown') or "
            "(reporter = 'source' and source_canonical_service = 'unknown') group by all",
        )
        assert local_unknown.returncode == 0, local_unknown.stderr
        assert json.loads(local_unknown.stdout) == [], local_unknown.stdout

        # A second demo on the same data dir is refused, clearly.
        again = _meshlens(
            "demo", "--data-dir", str(data), "--no-ui", "--duration", "1", "--grpc-port", ports[0]
        )
        assert again.returncode == 2
        assert "another meshlens demo is running" in again.stderr

        phase = _wait_for_phase(data, demo, "failed", deadline=time.monotonic() + 420)
        assert phase.get("phase") == "failed", phase
        demo.send_signal(signal.SIGTERM)
        output, _ = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            demo.terminate()
            demo.wait(30)
    assert demo.returncode == 0, output
    assert '"phase": "failed", "canary_weight": 0' in output, output
    graph = _meshlens("graph", "--data-dir", str(data), "--since", "1h", "--format", "json")
    assert graph.returncode == 0, graph.stderr
    g = json.loads(graph.stdout)
    edges = {(e["source"], e["target"]): e for e in g["edges"]}
    assert len(edges) >= 5
    assert any(e["mtls_ratio"] == 1.0 for e in edges.values())
    _mesh_page_on_the_demo_store(data, monkeypatch)


def _mesh_page_on_the_demo_store(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's Mesh page on what real Envoys wrote: node and edge details, the Istio config
    that applies, and a request rate that counts requests entering the mesh, not every hop."""
    from meshlens.demo.stack import DEMO_ISTIO_CONFIG
    from tests.dashboards.test_mesh_page import _app, _clickable, _figure, _markdown, _metrics

    config = data.parent / "istio.yaml"
    config.write_text(DEMO_ISTIO_CONFIG)
    monkeypatch.setenv("MESHLENS_DATA_DIR", str(data))
    monkeypatch.setenv("MESHLENS_ISTIO_CONFIG", str(config))
    at = _app(last="24h")
    metrics = _metrics(at)
    # bookinfo: every request entering at the gateway makes about four hops
    assert 0 < float(metrics["Requests/s"]) < float(metrics["Hops/s"]) / 2, metrics
    nodes = {i for kind, i in _clickable(_figure(at)) if kind == "node"}
    gateway = next(n for n in nodes if "ingressgateway" in n)
    productpage = next(n for n in nodes if "productpage" in n)
    at.selectbox(key="mesh_selected").set_value(productpage).run()
    assert not at.exception, [e.message for e in at.exception]
    assert "**Inbound**" in _markdown(at)
    at.selectbox(key="mesh_selected").set_value(f"{gateway}>{productpage}").run()
    assert not at.exception, [e.message for e in at.exception]
    # The demo's AuthorizationPolicy selects productpage: it is shown for the edge's target.
    assert any("productpage-viewer" in e.label for e in at.expander)


def test_demo_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = str(s.getsockname()[1])
        out = _meshlens("demo", "--data-dir", str(tmp_path), "--no-ui", "--grpc-port", port)
    assert out.returncode == 2
    assert f"port(s) in use: --grpc-port {port}" in out.stderr
