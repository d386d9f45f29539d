"""The Kubernetes actuator. No API server is available here, so:
- the exact JSON Patch bodies are asserted, applied with a real RFC 6902 implementation
  (jsonpatch) and the resulting objects validated against a VirtualService v1 schema written from
  Istio's CRD (data/virtualservice-v1.schema.json);
- the thin client talks real HTTP to a small stand-in API server on 127.0.0.1:0 that implements
  GET and json-patch PATCH of one VirtualService (auth header, content type, resourceVersion
  test ops, read-back), so credentials, retries and failures are exercised end to end.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonpatch
import jsonschema
import pyarrow as pa
import pytest
import yaml

from meshlens.analytics.errors import ActuatorError, RouteNotOwned, WeightError
from meshlens.analytics.gate.actuators.kubernetes import (
    KubeClient,
    KubeCredentials,
    KubernetesActuator,
    in_cluster_credentials,
    kubeconfig_credentials,
    resolve_credentials,
)
from meshlens.analytics.gate.config import parse_rollout_config
from meshlens.analytics.gate.judging import StoreJudge
from meshlens.analytics.gate.routes import Dest, Ownership, json_patch, read_weights
from meshlens.analytics.gate.runner import Gate
from meshlens.analytics.gate.state import load_state
from meshlens.collector.store.parquet_write import write_table

DATA = Path(__file__).parent / "data"
SCHEMA = json.loads((DATA / "virtualservice-v1.schema.json").read_text())
TOKEN = "test-token-123"


def productpage_vs() -> dict[str, Any]:
    """The subset-based VirtualService of deploy/gate/productpage-routing.yaml, plus a header
    route the gate must not touch, as the API server returns it."""
    docs = list(
        yaml.safe_load_all(
            (
                Path(__file__).resolve().parents[3] / "deploy/gate/productpage-routing.yaml"
            ).read_text()
        )
    )
    vs = copy.deepcopy(next(d for d in docs if d["kind"] == "VirtualService"))
    vs["metadata"]["resourceVersion"] = "1001"
    vs["spec"]["http"].insert(
        0,
        {
            "name": "testers",
            "match": [{"headers": {"end-user": {"exact": "jason"}}}],
            "route": [{"destination": {"host": "productpage", "subset": "v2"}}],
        },
    )
    return vs


SUBSETS = Ownership(Dest("productpage", "v1"), Dest("productpage", "v2"), ("primary",))


def validate(vs: dict[str, Any]) -> None:
    jsonschema.validate(vs, SCHEMA)
    for kind in ("http", "tcp", "tls"):
        for route in vs["spec"].get(kind, []):
            dests = route.get("route", [])
            if len(dests) > 1:  # Istio rejects splits that do not add up to 100
                assert sum(d.get("weight", 0) for d in dests) == 100, route


def test_subset_patch_is_exact_and_touches_only_owned_weights() -> None:
    vs = productpage_vs()
    validate(vs)
    ops = json_patch(vs, SUBSETS, 10)
    assert ops == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "1001"},
        {"op": "test", "path": "/spec/http/1/route/0/destination/host", "value": "productpage"},
        {"op": "test", "path": "/spec/http/1/route/0/destination/subset", "value": "v1"},
        {"op": "replace", "path": "/spec/http/1/route/0/weight", "value": 90},
        {"op": "test", "path": "/spec/http/1/route/1/destination/host", "value": "productpage"},
        {"op": "test", "path": "/spec/http/1/route/1/destination/subset", "value": "v2"},
        {"op": "replace", "path": "/spec/http/1/route/1/weight", "value": 10},
    ]
    after = jsonpatch.apply_patch(vs, ops)
    validate(after)
    expected = copy.deepcopy(vs)
    expected["spec"]["http"][1]["route"][0]["weight"] = 90
    expected["spec"]["http"][1]["route"][1]["weight"] = 10
    assert after == expected  # nothing else changed, the testers route included


def test_host_based_patch_adds_missing_weights() -> None:
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "bookinfo", "resourceVersion": "7"},
        "spec": {
            "hosts": ["reviews"],
            "http": [
                {
                    "route": [
                        {
                            "destination": {
                                "host": "reviews-stable.bookinfo.svc.cluster.local",
                                "port": {"number": 9080},
                            }
                        },
                        {
                            "destination": {
                                "host": "reviews-canary.bookinfo.svc.cluster.local",
                                "port": {"number": 9080},
                            }
                        },
                    ]
                }
            ],
        },
    }
    own = Ownership(
        Dest("reviews-stable.bookinfo.svc.cluster.local"),
        Dest("reviews-canary.bookinfo.svc.cluster.local"),
    )
    ops = json_patch(vs, own, 25)
    assert ops == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
        {
            "op": "test",
            "path": "/spec/http/0/route/0/destination/host",
            "value": "reviews-stable.bookinfo.svc.cluster.local",
        },
        {"op": "add", "path": "/spec/http/0/route/0/weight", "value": 75},
        {
            "op": "test",
            "path": "/spec/http/0/route/1/destination/host",
            "value": "reviews-canary.bookinfo.svc.cluster.local",
        },
        {"op": "add", "path": "/spec/http/0/route/1/weight", "value": 25},
    ]
    after = jsonpatch.apply_patch(vs, ops)
    validate(after)
    assert read_weights(after["spec"], own) == [(75, 25)]


def test_tcp_route_is_owned_too() -> None:
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "db"},
        "spec": {
            "hosts": ["db"],
            "tcp": [
                {
                    "route": [
                        {"destination": {"host": "db", "subset": "v1"}, "weight": 100},
                        {"destination": {"host": "db", "subset": "v2"}, "weight": 0},
                    ]
                }
            ],
        },
    }
    own = Ownership(Dest("db", "v1"), Dest("db", "v2"))
    after = jsonpatch.apply_patch(vs, json_patch(vs, own, 40))
    validate(after)
    assert read_weights(after["spec"], own) == [(60, 40)]


def test_refuses_routes_it_does_not_own_and_bad_weights() -> None:
    vs = productpage_vs()
    third = copy.deepcopy(vs)
    third["spec"]["http"][1]["route"].append(
        {"destination": {"host": "productpage", "subset": "v3"}, "weight": 0}
    )
    with pytest.raises(RouteNotOwned, match="not exactly productpage/v1 and productpage/v2"):
        json_patch(third, SUBSETS, 10)
    unnamed = Ownership(SUBSETS.baseline, SUBSETS.canary)
    with pytest.raises(RouteNotOwned, match="no route has exactly"):
        json_patch(third, unnamed, 10)
    with pytest.raises(RouteNotOwned, match=r"no route named \['canary-split'\]"):
        json_patch(vs, Ownership(SUBSETS.baseline, SUBSETS.canary, ("canary-split",)), 10)
    other = Ownership(Dest("ratings", "v1"), Dest("ratings", "v2"))
    with pytest.raises(RouteNotOwned):
        json_patch(vs, other, 10)
    for bad in (101, -1):
        with pytest.raises(WeightError, match=r"0\.\.100"):
            json_patch(vs, SUBSETS, bad)


# --- a stand-in API server ---------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class FakeApiServer:
    """GET / PATCH (application/json-patch+json) of one VirtualService, like kube-apiserver:
    bearer auth, RFC 6902 with test ops, resourceVersion bumps, schema validation."""

    path = "/apis/networking.istio.io/v1/namespaces/bookinfo/virtualservices/productpage"

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, str, bytes]] = []
        self.fail_next: list[int] = []  # statuses to answer the next PATCHes with
        self.concurrent_edits = 0  # bump resourceVersion behind the client's back this often
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    if self.path != outer.path:
                        raise ApiError(404, "not found")
                    if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                        raise ApiError(401, "Unauthorized")
                    ctype = self.headers.get("Content-Type", "")
                    outer.requests.append((self.command, self.path, ctype, body))
                    out = outer.patch(ctype, body) if self.command == "PATCH" else outer.obj
                    status, payload = 200, json.dumps(out).encode()
                except ApiError as exc:
                    status = exc.status
                    payload = json.dumps({"kind": "Status", "message": exc.message}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PATCH = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def patch(self, ctype: str, body: bytes) -> dict[str, Any]:
        if ctype != "application/json-patch+json":
            raise ApiError(415, "the body of the request was in an unknown format")
        if self.fail_next:
            raise ApiError(self.fail_next.pop(0), "injected failure")
        with self.lock:
            if self.concurrent_edits:
                self.concurrent_edits -= 1
                self.obj["metadata"]["resourceVersion"] = str(
                    int(self.obj["metadata"]["resourceVersion"]) + 1
                )
            try:
                new = jsonpatch.apply_patch(self.obj, json.loads(body))
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise ApiError(422, f"the server rejected our request: {exc}") from None
            try:
                validate(new)
            except (jsonschema.ValidationError, AssertionError) as exc:
                raise ApiError(422, f"VirtualService is invalid: {exc}") from None
            new["metadata"]["resourceVersion"] = str(int(new["metadata"]["resourceVersion"]) + 1)
            self.obj = new
            return new

    def weights(self) -> tuple[int, int]:
        route = self.obj["spec"]["http"][1]["route"]
        return route[0]["weight"], route[1]["weight"]


@pytest.fixture
def api() -> Any:
    server = FakeApiServer(productpage_vs())
    yield server
    server.stop()


def k8s_actuator(api: FakeApiServer) -> KubernetesActuator:
    cfg = parse_rollout_config(
        {
            "rollout": "productpage",
            "service": "productpage.bookinfo.svc.cluster.local",
            "baseline": "v1",
            "canary": "v2",
            "actuator": {
                "type": "kubernetes",
                "namespace": "bookinfo",
                "virtualService": "productpage",
                "routes": ["primary"],
                "baseline": {"host": "productpage", "subset": "v1"},
                "canary": {"host": "productpage", "subset": "v2"},
            },
        }
    )
    creds = KubeCredentials(api.url, TOKEN, True, None, "bookinfo", "test")
    return KubernetesActuator.from_options(cfg.actuator.options, cfg, creds)


def test_client_patches_and_verifies_through_http(api: FakeApiServer) -> None:
    act = k8s_actuator(api)
    act.set_canary_weight(30)
    assert api.weights() == (70, 30)
    assert act.current_canary_weight() == 30
    methods = [(m, ct) for m, _p, ct, _b in api.requests]
    assert methods[:3] == [("GET", ""), ("PATCH", "application/json-patch+json"), ("GET", "")]
    sent = json.loads(api.requests[1][3])
    assert sent == act.sent[0]
    assert sent[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "1001"}
    assert api.obj["metadata"]["resourceVersion"] == "1002"
    assert api.obj["spec"]["http"][0] == productpage_vs()["spec"]["http"][0]  # untouched
    validate(api.obj)


def test_conflicting_edit_fails_the_patch_and_a_retry_succeeds(api: FakeApiServer) -> None:
    act = k8s_actuator(api)
    api.concurrent_edits = 1
    with pytest.raises(ActuatorError, match="HTTP 422"):
        act.set_canary_weight(20)
    assert api.weights() == (100, 0)  # the guarded patch did not land on the changed object
    act.set_canary_weight(20)  # a fresh GET, a fresh resourceVersion
    assert api.weights() == (80, 20)


def write_healthy_requests(data_dir: Path, start: float, seconds: float, n: int = 6000) -> None:
    # 3000 error-free requests a side: enough to bound the error rate within the judge's
    # default +0.5 pp (a few hundred are not, and the gate would hold).
    ts = [start + seconds * i / n for i in range(n)]
    versions = ["v1" if i % 2 else "v2" for i in range(n)]
    table = pa.table(
        {
            "ts": pa.array([int(t * 1e6) for t in ts], pa.timestamp("us", tz="UTC")),
            "duration_ms": [5.0 + (i % 7) for i in range(n)],
            "reporter": ["destination"] * n,
            "protocol": ["http"] * n,
            "destination_service": ["productpage.bookinfo.svc.cluster.local"] * n,
            "destination_service_name": ["productpage"] * n,
            "destination_version": versions,
            "response_code": [200] * n,
            "response_flags": ["-"] * n,
            "grpc_status": [""] * n,
        }
    )
    write_table(data_dir, "requests", table, node="test", lo=int(start))


def test_gate_restart_mid_rollout_resumes_the_kubernetes_weights(
    api: FakeApiServer, tmp_path: Path
) -> None:
    cfg = parse_rollout_config(
        {
            "rollout": "productpage",
            "service": "productpage.bookinfo.svc.cluster.local",
            "baseline": "v1",
            "canary": "v2",
            "analysis": {"interval": "2m", "stepWeights": [10, 30, 60], "failureLimit": 2},
            "apply": {"retries": 2, "backoff": "1s"},
            # ownership defaults: subsets baseline/canary of `host` (here the VirtualService's
            # short host name)
            "actuator": {
                "type": "kubernetes",
                "namespace": "bookinfo",
                "virtualService": "productpage",
                "host": "productpage",
                "routes": ["primary"],
            },
        }
    )
    t = {"now": float(int(time.time()) - 7200)}
    judge = StoreJudge(tmp_path, service=cfg.service, baseline="v1", canary="v2")

    def make() -> Gate:
        creds = KubeCredentials(api.url, TOKEN, True, None, "bookinfo", "test")
        act = KubernetesActuator.from_options(cfg.actuator.options, cfg, creds)
        assert act.own == SUBSETS
        return Gate(
            cfg,
            tmp_path,
            actuator=act,
            judge=judge,
            clock=lambda: t["now"],
            sleep=lambda s: t.__setitem__("now", t["now"] + s),
        )

    gate = make()
    gate.start()
    assert api.weights() == (90, 10)
    write_healthy_requests(tmp_path, t["now"], 120)
    t["now"] += 120
    assert gate.run_once().canary_weight == 30
    assert api.weights() == (70, 30)
    # "crash"; someone resets the VirtualService (e.g. Argo CD sync) while the gate is down
    api.obj["spec"]["http"][1]["route"][0]["weight"] = 100
    api.obj["spec"]["http"][1]["route"][1]["weight"] = 0
    gate2 = make()
    st = gate2.start()
    assert st.canary_weight == 30 and st.step_index == 1 and api.weights() == (70, 30)
    write_healthy_requests(tmp_path, t["now"], 120)
    t["now"] += 120
    assert gate2.run_once().canary_weight == 60
    # the API server refuses every write: bounded retries, then a pause (no guessing)
    api.fail_next = [403] * 3
    write_healthy_requests(tmp_path, t["now"], 120)
    t["now"] += 120
    st = gate2.run_once()
    assert st.phase == "paused" and st.canary_weight == 60 and api.weights() == (40, 60)
    assert "HTTP 403" in st.reason
    assert [m for m, *_ in api.requests].count("PATCH") >= 3
    assert gate2.rows[-1]["action"] == "pause"
    details = json.loads(gate2.rows[-1]["details"])
    assert details["intended_action"] == "promote" and details["applied"] is False
    persisted = load_state(tmp_path, "productpage")
    assert persisted is not None and persisted.phase == "paused"


# --- credentials ---------------------------------------------------------------------------


def test_in_cluster_credentials(tmp_path: Path) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text(TOKEN + "\n")
    (sa / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (sa / "namespace").write_text("bookinfo")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    creds = in_cluster_credentials(sa, env)
    assert creds.server == "https://10.96.0.1:443" and creds.token == TOKEN
    assert creds.verify == str(sa / "ca.crt") and creds.namespace == "bookinfo"
    assert resolve_credentials(sa_dir=sa, environ=env) == creds
    client = KubeClient(creds)
    assert client.session.headers["Authorization"] == f"Bearer {TOKEN}"
    assert client.url("networking.istio.io", "v1", "bookinfo", "virtualservices", "x") == (
        "https://10.96.0.1:443/apis/networking.istio.io/v1/namespaces/bookinfo/virtualservices/x"
    )


def test_kubeconfig_credentials(tmp_path: Path) -> None:
    ca = base64.b64encode(b"CA PEM").decode()
    kc = tmp_path / "config"
    kc.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "dev",
                "clusters": [
                    {
                        "name": "c1",
                        "cluster": {
                            "server": "https://k8s.example:6443/",
                            "certificate-authority-data": ca,
                        },
                    }
                ],
                "users": [
                    {"name": "u1", "user": {"token": TOKEN}},
                    {"name": "u2", "user": {"exec": {"command": "aws"}}},
                ],
                "contexts": [
                    {
                        "name": "dev",
                        "context": {"cluster": "c1", "user": "u1", "namespace": "bookinfo"},
                    },
                    {"name": "eks", "context": {"cluster": "c1", "user": "u2"}},
                ],
            }
        )
    )
    creds = kubeconfig_credentials(kc)
    assert creds.server == "https://k8s.example:6443" and creds.token == TOKEN
    assert creds.namespace == "bookinfo"
    assert isinstance(creds.verify, str) and Path(creds.verify).read_bytes() == b"CA PEM"
    with pytest.raises(ActuatorError, match="exec/auth plugin"):
        kubeconfig_credentials(kc, "eks")
    with pytest.raises(ActuatorError, match="no context named 'nope'"):
        kubeconfig_credentials(kc, "nope")
