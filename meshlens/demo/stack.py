"""The local demo stack: meshlens serve + a bookinfo mesh behind real Envoy sidecars + load +
a canary rollout driven by the gate + the Streamlit app. Every part is a real process; this
module only starts, watches and stops them (the parts talk over loopback).

    ingress (load generator's sidecar) -> productpage v1 -> details v1
                                                       -> reviews v1 (fixed share), v2 (baseline),
                                                          v3 (canary, weight moved by the gate)
                                          reviews v2/v3 -> ratings v1
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import yaml

from meshlens.demo.loadgen import LoadGenerator
from meshlens.localmesh.bootstrap import Collector
from meshlens.localmesh.mesh import LocalMesh, MeshWorkload
from meshlens.localmesh.ports import free_port

SCENARIOS: Final = {
    # scenario -> knobs of the canary (reviews v3)
    "healthy": {"error_rate": 0.0, "extra_latency_ms": 0.0},
    "errors": {"error_rate": 0.05, "extra_latency_ms": 0.0},
    "latency": {"error_rate": 0.0, "extra_latency_ms": 150.0},
}
REVIEWS: Final = "reviews.default.svc.cluster.local"
V1_SHARE: Final = 20  # reviews v1 keeps a fixed relative weight the gate does not own


# The judge for the demo: the default error rate and the latency distribution, with a smaller
# minimum sample and tolerances that a canary getting a few requests per second can settle
# within minutes on a laptop whose load moves every latency (a pass means "no regression beyond
# the tolerance"; the production defaults, +0.5 pp of errors and +10% latency, need thousands
# of canary requests). The distribution (P(canary > baseline)) rather than a quantile: its
# per-block statistic does not depend on how the block's requests split between the versions,
# which at a 10% weight varies a lot from block to block. The latency scenario (+150 ms on
# ~50 ms) is far beyond x2.
DEMO_JUDGE_CONFIG: Final = """\
mode: sequential
min_requests: 100
metrics:
  - {name: error-rate, kind: error_rate, error_codes: [5xx, no_response], critical: true,
     tolerance: 2pp}
  - {name: latency, kind: latency, critical: true, tolerance: 100%}
"""

DEMO_ISTIO_CONFIG: Final = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: productpage-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  action: ALLOW
  rules:
    - from:
        - source: {principals: ["cluster.local/ns/default/sa/istio-ingressgateway"]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
    - {name: v3, labels: {version: v3}}
"""


class DemoError(Exception):
    """A demo that cannot start: the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    data_dir: Path
    scenario: str = "healthy"
    grpc_port: int = 4317
    http_port: int = 4318
    api_port: int = 8080
    ui_port: int = 8501
    duration_s: float = 0.0  # 0 = until Ctrl-C
    ui: bool = True
    rps: float = 30.0
    interval_s: float = 10.0
    steps: tuple[int, ...] = (10, 25, 50)
    log_level: str = "warning"


@dataclass
class Running:
    name: str
    proc: subprocess.Popen[bytes]
    log: IO[bytes]


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise DemoError(f"{url}: the process exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise DemoError(f"{url} not ready after {timeout:g}s")


@dataclass
class DemoStack:
    opts: DemoOptions
    procs: list[Running] = field(default_factory=list)
    mesh: LocalMesh | None = None
    load: LoadGenerator | None = None
    rollout_config: Path | None = None
    _lock: IO[str] | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def logs(self) -> Path:
        return self.opts.data_dir / "demo" / "logs"

    def _meshlens(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "meshlens",
            *args,
            "--data-dir",
            str(self.opts.data_dir),
            "--log-level",
            self.opts.log_level,
        ]

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Running:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        running = Running(name, proc, log)
        self.procs.append(running)
        return running

    # -- start ---------------------------------------------------------------------------------
    def preflight(self) -> None:
        o = self.opts
        o.data_dir.mkdir(parents=True, exist_ok=True)
        lock = open(o.data_dir / "demo.lock", "w")  # noqa: SIM115 - held while running
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise DemoError(
                f"another meshlens demo is running on {o.data_dir}; stop it first "
                "(Ctrl-C in its terminal) or use another --data-dir"
            ) from None
        self._lock = lock
        ports = {"--grpc-port": o.grpc_port, "--http-port": o.http_port, "--api-port": o.api_port}
        if o.ui:
            ports["--ui-port"] = o.ui_port
        busy = [f"{flag} {p}" for flag, p in ports.items() if p and not _port_free(p)]
        if busy:
            raise DemoError(
                f"port(s) in use: {', '.join(busy)}. Is another meshlens running? "
                "Stop it or pass other ports, e.g. --grpc-port 14317"
            )

    def start_collector(self) -> None:
        o = self.opts
        serve = self._spawn(
            "serve",
            self._meshlens(
                "serve",
                "--grpc-port",
                str(o.grpc_port),
                "--http-port",
                str(o.http_port),
                "--api-port",
                str(o.api_port),
            ),
        )
        _wait_http(f"http://127.0.0.1:{o.api_port}/readyz", 60, serve.proc)

    def build_mesh(self) -> tuple[LocalMesh, dict[str, MeshWorkload], dict[str, int]]:
        o = self.opts
        # Like an Istio mesh configured per namespace/workload with the Telemetry API: some
        # sidecars send gRPC ALS (envoyHttpAls), the others OpenTelemetry access logs
        # (envoyOtelAls); all send OTLP traces. One kind per proxy, so no request is logged twice.
        als = Collector("127.0.0.1", o.grpc_port, als=True, otel_logs=False)
        otel = Collector("127.0.0.1", o.grpc_port, als=False, otel_logs=True)
        mesh = LocalMesh(o.data_dir / "demo" / "mesh", als)
        ports: dict[str, int] = {}
        w: dict[str, MeshWorkload] = {}
        for app, version, collector in (
            ("productpage", "v1", als),
            ("details", "v1", otel),
            ("reviews", "v1", als),
            ("reviews", "v2", als),
            ("reviews", "v3", als),
            ("ratings", "v1", otel),
            ("istio-ingressgateway", "v1", otel),
        ):
            key = f"{app}-{version}"
            ports[key] = free_port()
            w[key] = mesh.add_workload(app, version, app_port=ports[key], collector=collector)
        mesh.connect(w["istio-ingressgateway-v1"], "productpage")
        mesh.connect(w["productpage-v1"], "details")
        mesh.connect(w["productpage-v1"], "reviews", weights={"v1": V1_SHARE, "v2": 100, "v3": 0})
        for v in ("v2", "v3"):
            mesh.connect(w[f"reviews-{v}"], "ratings")
        return mesh, w, ports

    def start_apps(
        self, mesh: LocalMesh, w: dict[str, MeshWorkload], ports: dict[str, int]
    ) -> None:
        knobs = SCENARIOS[self.opts.scenario]
        for key, workload in w.items():
            if workload.app == "istio-ingressgateway":
                continue  # the load generator is its "app"
            cmd = [
                sys.executable,
                "-m",
                "meshlens.demo.bookinfo",
                "--service",
                workload.app,
                "--version",
                workload.version,
                "--port",
                str(ports[key]),
                "--otlp-endpoint",
                f"127.0.0.1:{self.opts.grpc_port}",
            ]
            for up in workload.upstreams:
                name = up.host.split(".")[0]
                cmd += ["--upstream", f"{name}={mesh.outbound_url(workload, name)}"]
            if key == "reviews-v3":
                cmd += [
                    "--error-rate",
                    str(knobs["error_rate"]),
                    "--extra-latency-ms",
                    str(knobs["extra_latency_ms"]),
                ]
            self._spawn(f"app-{key}", cmd)

    def write_rollout(self, admin_url: str) -> Path:
        o = self.opts
        judge = o.data_dir / "demo" / "canary.yaml"
        judge.write_text(DEMO_JUDGE_CONFIG)
        config = {
            "rollout": "reviews-v3",
            "service": REVIEWS,
            "baseline": "v2",
            "canary": "v3",
            "selector": "version",
            "judge": {"config": str(judge)},
            "analysis": {
                "interval": f"{o.interval_s:g}s",
                # each step judged on its own traffic: a window spanning two weights mixes
                # two traffic splits, which the latency tests charge as drift
                "window": "step",
                "stepWeights": list(o.steps),
                "failureLimit": 2,
                "inconclusive": "hold",
                "progressDeadline": "30m",
            },
            "actuator": {"type": "envoy", "admin": admin_url, "host": REVIEWS, "port": 9080},
        }
        path = o.data_dir / "demo" / "rollout.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def write_istio_config(self) -> Path:
        """What the demo mesh would be configured with in Istio: the Security and Routing
        pages (and `meshlens check --config`) compare it with the traffic."""
        path = self.opts.data_dir / "demo" / "istio.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(DEMO_ISTIO_CONFIG)
        return path

    def start(self) -> None:
        self.preflight()
        self.start_collector()
        mesh, w, ports = self.build_mesh()
        self.mesh = mesh
        self.start_apps(mesh, w, ports)
        for key, port in ports.items():
            if not key.startswith("istio-ingressgateway"):
                _wait_http(f"http://127.0.0.1:{port}/health", 30)
        mesh.start(timeout=60)
        self.load = LoadGenerator(
            mesh.outbound_url(w["istio-ingressgateway-v1"], "productpage"), rps=self.opts.rps
        )
        self.load.start()
        admin = mesh.sidecar(w["productpage-v1"]).admin_url
        self.rollout_config = self.write_rollout(admin)
        self._spawn("gate", self._meshlens("gate", "run", "--config", str(self.rollout_config)))
        if self.opts.ui:
            # The UI's sign-in token is made here, in a file only this user reads, so that the
            # guide can print the sign-in URL (the Canary page's actions need a signed-in user).
            from meshlens.dashboards.auth_rules import new_token

            token_file = self.opts.data_dir / "demo" / "ui-token"
            token_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(new_token() + "\n")
            env = {
                "MESHLENS_ISTIO_CONFIG": str(self.write_istio_config()),
                "MESHLENS_UI_TOKEN": "",  # the file, not a token from the caller's environment
                "MESHLENS_UI_TOKEN_FILE": str(token_file),
            }
            ui = self._spawn("ui", self._meshlens("ui", "--port", str(self.opts.ui_port)), env)
            _wait_http(f"http://127.0.0.1:{self.opts.ui_port}/_stcore/health", 60, ui.proc)

    # -- status and stop -----------------------------------------------------------------------
    def gate_status(self) -> dict[str, Any]:
        out = subprocess.run(
            self._meshlens("gate", "status", "--rollout", "reviews-v3", "--format", "json"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        try:
            return dict(json.loads(out.stdout))
        except ValueError:
            return {"error": (out.stderr or out.stdout).strip()[-300:]}

    def check_children(self) -> str | None:
        """The name of a part that died unexpectedly, if any."""
        for r in self.procs:
            if r.proc.poll() is not None and r.name != "gate":
                return (
                    f"{r.name} exited with code {r.proc.returncode} (log: {self.logs}/{r.name}.log)"
                )
        return None

    def stop(self) -> None:
        self._stopping.set()
        if self.load is not None:
            self.load.stop()
        # Stop in reverse: UI and gate first, the mesh, then the collector last, so it flushes
        # everything the sidecars sent before it exits.
        for r in reversed(self.procs):
            if r.name != "serve":
                _terminate(r)
        if self.mesh is not None:
            self.mesh.stop()
        for r in self.procs:
            if r.name == "serve":
                _terminate(r, timeout=60)
        for r in self.procs:
            r.log.close()
        if self._lock is not None:
            self._lock.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[DemoStack]:
        try:
            self.start()
            yield self
        finally:
            self.stop()


def _terminate(r: Running, timeout: float = 15.0) -> None:
    if r.proc.poll() is not None:
        return
    # SIGTERM to the process only: it stops its own children (e.g. the collector's decoder
    # workers) in order; the whole group is killed only if it does not exit in time.
    r.proc.terminate()
    try:
        r.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(r.proc.pid, signal.SIGKILL)
        r.proc.wait(5)
