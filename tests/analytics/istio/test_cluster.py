"""`--cluster`: the four Istio kinds plus pods and services for labels, from a fake API server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from meshlens.analytics.istio.cluster import Credentials, load_from_cluster

PA = {
    "apiVersion": "security.istio.io/v1",
    "kind": "PeerAuthentication",
    "metadata": {
        "name": "httpbin",
        "namespace": "bar",
        "creationTimestamp": "2024-01-01T00:00:00Z",
    },
    "spec": {
        "selector": {"matchLabels": {"app": "httpbin"}},
        "portLevelMtls": {"80": {"mode": "DISABLE"}},
    },
}
POD = {
    "metadata": {
        "name": "httpbin-6f4d8b7c9d-q2x7z",
        "namespace": "bar",
        "uid": "u1",
        "labels": {"app": "httpbin", "version": "v1", "pod-template-hash": "6f4d8b7c9d"},
        "ownerReferences": [
            {"kind": "ReplicaSet", "name": "httpbin-6f4d8b7c9d", "controller": True}
        ],
    },
    "spec": {"serviceAccountName": "httpbin"},
}
SVC = {
    "metadata": {"name": "httpbin", "namespace": "bar"},
    "spec": {"selector": {"app": "httpbin"}, "ports": [{"port": 8000, "targetPort": 80}]},
}


def _serve(routes: dict[str, tuple[int, dict[str, Any]]]) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code, body = routes.get(self.path, (404, {}))
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def api() -> Iterator[dict[str, tuple[int, dict[str, Any]]]]:
    routes: dict[str, tuple[int, dict[str, Any]]] = {
        "/apis/security.istio.io/v1/peerauthentications": (
            200,
            {"kind": "PeerAuthenticationList", "items": [PA]},
        ),
        "/api/v1/pods": (200, {"kind": "PodList", "items": [POD]}),
        "/api/v1/services": (200, {"kind": "ServiceList", "items": [SVC]}),
    }
    yield routes


def test_pods_and_services_give_labels(api: dict[str, tuple[int, dict[str, Any]]]) -> None:
    for url in _serve(api):
        cfg = load_from_cluster(Credentials(url))
    (pa,) = cfg.resources
    assert (pa.ref, pa.created) == ("PeerAuthentication bar/httpbin", "2024-01-01T00:00:00Z")
    (wl,) = cfg.workloads
    assert (wl.ref, wl.live, wl.service_account) == ("bar/httpbin", True, "httpbin")
    assert cfg.services[0].target_ports == {8000: 80}
    assert not cfg.notes


def test_pods_forbidden_is_a_note_not_a_failure(api: dict[str, tuple[int, dict[str, Any]]]) -> None:
    api["/api/v1/pods"] = (403, {"kind": "Status", "message": "forbidden"})
    for url in _serve(api):
        cfg = load_from_cluster(Credentials(url))
    assert not cfg.workloads and len(cfg.resources) == 1
    assert cfg.notes and "pods not readable" in cfg.notes[0] and "HTTP 403" in cfg.notes[0]
