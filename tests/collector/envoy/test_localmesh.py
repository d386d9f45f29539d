"""The local mesh toolkit: certificates, the sidecar bootstrap (pure), the Envoy launcher."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtensionOID
from google.protobuf import struct_pb2

from meshlens.collector.decode import identity
from meshlens.localmesh.bootstrap import (
    Collector,
    SidecarSpec,
    Subset,
    Upstream,
    build_bootstrap,
    peer_metadata_header,
    weight_runtime_key,
)
from meshlens.localmesh.certs import DemoCA
from meshlens.localmesh.envoy import EnvoyError, EnvoyProcess

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> DemoCA:
    return DemoCA(tmp_path_factory.mktemp("ca"))


def _spec(ca: DemoCA) -> SidecarSpec:
    up = Upstream(
        "reviews.default.svc.cluster.local",
        9080,
        15001,
        (
            Subset("v1", 16001, "spiffe://cluster.local/ns/default/sa/reviews", 90),
            Subset("v2", 16002, "spiffe://cluster.local/ns/default/sa/reviews", 10),
        ),
    )
    return SidecarSpec(
        app="productpage",
        version="v1",
        namespace="default",
        service_port=9080,
        inbound_port=15006,
        app_port=8000,
        certs=ca.issue("default", "bookinfo-productpage"),
        collector=Collector("127.0.0.1", 4317, auth_token="s3cret"),
        upstreams=(up,),
    )


def test_certificates_carry_spiffe_uri_sans(ca: DemoCA) -> None:
    files = ca.issue("shop", "web")
    assert files.spiffe_id == "spiffe://cluster.local/ns/shop/sa/web"
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [files.spiffe_id]
    root = x509.load_pem_x509_certificate(files.ca.read_bytes())
    cert.verify_directly_issued_by(root)


def test_bootstrap_is_istio_like(ca: DemoCA) -> None:
    spec = _spec(ca)
    b = build_bootstrap(spec)
    node = b["node"]
    assert node["id"] == spec.node_id
    assert node["id"].startswith("sidecar~127.0.0.1~productpage-v1-")
    assert node["id"].endswith(".default~default.svc.cluster.local")
    meta = node["metadata"]
    assert (meta["NAMESPACE"], meta["WORKLOAD_NAME"], meta["SERVICE_ACCOUNT"]) == (
        "default",
        "productpage-v1",
        "bookinfo-productpage",
    )
    assert meta["LABELS"]["service.istio.io/canonical-name"] == "productpage"
    # our own decoder reads it back as Istio identity
    w = identity.workload_from_node(node["id"], meta)
    assert w.principal == "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    clusters = {c["name"]: c for c in b["static_resources"]["clusters"]}
    assert set(clusters) == {
        "inbound|9080||",
        "meshlens_collector",
        "outbound|9080|v1|reviews.default.svc.cluster.local",
        "outbound|9080|v2|reviews.default.svc.cluster.local",
    }
    tls = clusters["outbound|9080|v2|reviews.default.svc.cluster.local"]["transport_socket"]
    assert tls["typed_config"]["sni"] == "outbound_.9080_.v2_.reviews.default.svc.cluster.local"
    runtime = b["layered_runtime"]["layers"][0]["static_layer"]
    up = spec.upstreams[0]
    assert runtime[weight_runtime_key(up, up.subsets[0])] == 90
    assert runtime[weight_runtime_key(up, up.subsets[1])] == 10
    assert weight_runtime_key(up, up.subsets[1]) == (
        "meshlens.weights.reviews.default.svc.cluster.local.9080."
        "outbound|9080|v2|reviews.default.svc.cluster.local"
    )
    assert b["layered_runtime"]["layers"][1] == {"name": "admin", "admin_layer": {}}
    text = repr(b)
    assert "Bearer s3cret" in text  # gRPC initial metadata for meshlens --auth-token


def test_peer_metadata_header_round_trips(ca: DemoCA) -> None:
    spec = _spec(ca)
    s = struct_pb2.Struct.FromString(base64.b64decode(peer_metadata_header(spec)))
    assert s["WORKLOAD_NAME"] == "productpage-v1"
    w = identity.peer_from_header(peer_metadata_header(spec))
    assert w is not None
    assert (w.workload, w.canonical_service, w.version, w.namespace) == (
        "productpage-v1",
        "productpage",
        "v1",
        "default",
    )


def test_envoy_bad_config_fails_with_log_tail(tmp_path: Path) -> None:
    bad = {"static_resources": {"clusters": [{"name": "x", "type": "NOPE"}]}}
    with pytest.raises(EnvoyError, match="exited with") as info:
        EnvoyProcess("bad", bad, tmp_path).start(timeout=20)
    assert "NOPE" in str(info.value) or info.value.log_tail


def test_envoy_admin_runtime(tmp_path: Path) -> None:
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "layered_runtime": {
            "layers": [
                {"name": "static", "static_layer": {"a.b": 1}},
                {"name": "admin", "admin_layer": {}},
            ]
        },
    }
    with EnvoyProcess("plain", config, tmp_path) as envoy:
        assert envoy.running()
        envoy.runtime_modify({"a.b": 7, "x|y": "z"})
        rt = envoy.runtime()
        assert (rt["a.b"], rt["x|y"]) == ("7", "z")
        with pytest.raises(EnvoyError, match="404"):
            envoy.admin("/no-such-endpoint")
    assert not envoy.running()


def test_envoys_are_stopped_when_the_starter_exits(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from meshlens.localmesh.envoy import EnvoyProcess\n"
        "cfg = {'admin': {'address': {'socket_address': "
        "{'address': '127.0.0.1', 'port_value': 0}}}}\n"
        f"e = EnvoyProcess('orphan', cfg, Path({str(tmp_path)!r})).start()\n"
        "print(e.proc.pid, flush=True)\n"
        "raise SystemExit(3)  # no stop(): the atexit hook must do it\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert proc.returncode == 3, proc.stderr
    pid = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by init) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
