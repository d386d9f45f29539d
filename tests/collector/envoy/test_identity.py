"""Istio identity rules: cluster names, node metadata, SPIFFE, peer metadata filter state."""

from __future__ import annotations

import pytest
from google.protobuf import struct_pb2, wrappers_pb2

from meshlens.collector.decode import identity
from meshlens.collector.decode.identity import Observation, Workload


@pytest.mark.parametrize(
    ("name", "direction", "port", "subset", "host", "reporter"),
    [
        (
            "outbound|9080|v1|reviews.default.svc.cluster.local",
            "outbound",
            9080,
            "v1",
            "reviews.default.svc.cluster.local",
            "source",
        ),
        (
            "outbound|9080||details.default.svc.cluster.local",
            "outbound",
            9080,
            "",
            "details.default.svc.cluster.local",
            "source",
        ),
        ("inbound|9080||", "inbound", 9080, "", "", "destination"),
        (
            "inbound|8080|http|reviews.default.svc.cluster.local",
            "inbound",
            8080,
            "http",
            "reviews.default.svc.cluster.local",
            "destination",
        ),
        ("PassthroughCluster", "passthrough", None, "", "", "source"),
        ("BlackHoleCluster", "blackhole", None, "", "", "source"),
        ("InboundPassthroughCluster", "inbound_passthrough", None, "", "", "destination"),
        ("", "other", None, "", "", "source"),
        ("-", "other", None, "", "", "source"),
        ("my_static_cluster", "other", None, "", "", "source"),
        # Not TCP ports: no port (and no failed record downstream).
        (
            "outbound|99999999999|v1|r.default.svc.cluster.local",
            "outbound",
            None,
            "v1",
            "r.default.svc.cluster.local",
            "source",
        ),
        (
            "outbound|²|v1|r.default.svc.cluster.local",
            "outbound",
            None,
            "v1",
            "r.default.svc.cluster.local",
            "source",
        ),
    ],
)
def test_parse_upstream_cluster(
    name: str, direction: str, port: int | None, subset: str, host: str, reporter: str
) -> None:
    c = identity.parse_upstream_cluster(name)
    assert (c.direction, c.port, c.subset, c.host, c.reporter) == (
        direction,
        port,
        subset,
        host,
        reporter,
    )


def test_istio_sni() -> None:
    c = identity.parse_istio_sni("outbound_.9080_.v2_.reviews.default.svc.cluster.local")
    assert c is not None
    assert (c.port, c.subset, c.host) == (9080, "v2", "reviews.default.svc.cluster.local")
    no_subset = identity.parse_istio_sni("outbound_.8000_._.httpbin.foo.svc.cluster.local")
    assert no_subset is not None and no_subset.subset == ""
    assert identity.parse_istio_sni("example.com") is None
    assert identity.parse_istio_sni("") is None


@pytest.mark.parametrize(
    ("host", "ns", "expected"),
    [
        (
            "reviews.default.svc.cluster.local",
            "x",
            ("reviews.default.svc.cluster.local", "reviews", "default"),
        ),
        ("reviews:9080", "default", ("reviews.default.svc.cluster.local", "reviews", "default")),
        ("reviews.prod:9080", "default", ("reviews.prod.svc.cluster.local", "reviews", "prod")),
        ("reviews", "unknown", ("reviews", "reviews", "unknown")),
        ("10.0.0.5:80", "default", ("10.0.0.5", "10.0.0.5", "unknown")),
        ("api.example.com", "default", ("api.example.com", "api", "unknown")),
        ("", "default", ("unknown", "unknown", "unknown")),
        ("-", "default", ("unknown", "unknown", "unknown")),
    ],
)
def test_service_from_host(host: str, ns: str, expected: tuple[str, str, str]) -> None:
    s = identity.service_from_host(host, ns)
    assert (s.host, s.name, s.namespace) == expected


def test_spiffe() -> None:
    s = identity.parse_spiffe("spiffe://cluster.local/ns/default/sa/bookinfo-reviews")
    assert s is not None
    assert (s.trust_domain, s.namespace, s.service_account) == (
        "cluster.local",
        "default",
        "bookinfo-reviews",
    )
    assert identity.parse_spiffe("spiffe://cluster.local/ns/default") is None
    assert identity.parse_spiffe("https://example.com") is None
    assert identity.principal_from_sans(["https://x", "spiffe://td/ns/a/sa/b"]) == (
        "spiffe://td/ns/a/sa/b"
    )
    assert identity.principal_from_sans([]) == "unknown"


def test_node_id_and_metadata() -> None:
    node_id = "sidecar~10.1.2.3~reviews-v2-7f9c8d6b5-x2x4p.bookinfo~bookinfo.svc.cluster.local"
    nid = identity.parse_node_id(node_id)
    assert nid == identity.NodeId("sidecar", "10.1.2.3", "reviews-v2-7f9c8d6b5-x2x4p", "bookinfo")
    meta = {
        "NAMESPACE": "bookinfo",
        "WORKLOAD_NAME": "reviews-v2",
        "SERVICE_ACCOUNT": "bookinfo-reviews",
        "MESH_ID": "cluster.local",
        "CLUSTER_ID": "Kubernetes",
        "LABELS": {
            "app": "reviews",
            "version": "v2",
            "service.istio.io/canonical-name": "reviews",
            "service.istio.io/canonical-revision": "v2",
        },
    }
    w = identity.workload_from_node(node_id, meta)
    assert w == Workload(
        workload="reviews-v2",
        namespace="bookinfo",
        canonical_service="reviews",
        version="v2",
        principal="spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews",
        app="reviews",
        pod="reviews-v2-7f9c8d6b5-x2x4p",
        cluster_id="Kubernetes",
        mesh_id="cluster.local",
    )
    # Without metadata: namespace and workload from the node id, everything else unknown.
    bare = identity.workload_from_node(node_id, {})
    assert (
        bare.namespace,
        bare.workload,
        bare.canonical_service,
        bare.version,
        bare.principal,
    ) == ("bookinfo", "reviews-v2", "reviews-v2", "unknown", "unknown")
    assert identity.parse_node_id("not-a-node-id") is None
    assert identity.workload_from_node("", {}) == identity.UNKNOWN_WORKLOAD


def _any_struct(fields: dict[str, object]) -> tuple[str, bytes]:
    s = struct_pb2.Struct()
    s.update(fields)
    return identity.STRUCT_URL, s.SerializeToString()


def test_peer_filter_state_struct_tokens() -> None:
    # WorkloadMetadataObject::serializeAsProto (istio/proxy extensions/common/metadata_object.cc)
    url, raw = _any_struct(
        {
            "type": "deployment",
            "workload": "productpage-v1",
            "name": "productpage-v1-abc-12345",
            "cluster": "Kubernetes",
            "namespace": "default",
            "service": "productpage",
            "revision": "v1",
            "app": "productpage",
            "version": "v1",
            "identity": "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        }
    )
    w = identity.peer_from_filter_state(url, raw)
    assert w is not None
    assert (w.workload, w.namespace, w.canonical_service, w.version, w.principal, w.pod) == (
        "productpage-v1",
        "default",
        "productpage",
        "v1",
        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        "productpage-v1-abc-12345",
    )


def test_peer_filter_state_node_metadata_style() -> None:
    # convertWorkloadMetadataToStruct: node-metadata keys, labels nested
    url, raw = _any_struct(
        {
            "NAME": "ratings-v1-abc-12345",
            "NAMESPACE": "default",
            "WORKLOAD_NAME": "ratings-v1",
            "CLUSTER_ID": "Kubernetes",
            "LABELS": {
                "service.istio.io/canonical-name": "ratings",
                "service.istio.io/canonical-revision": "v1",
                "app": "ratings",
                "version": "v1",
            },
        }
    )
    w = identity.peer_from_filter_state(url, raw)
    assert w is not None
    assert (w.workload, w.namespace, w.canonical_service, w.version) == (
        "ratings-v1",
        "default",
        "ratings",
        "v1",
    )


def test_peer_filter_state_string_pairs() -> None:
    # serializeAsString / baggage-style text in a StringValue
    text = "type=deployment,workload=details-v1,namespace=default,service=details,revision=v1"
    raw = wrappers_pb2.StringValue(value=text).SerializeToString()
    w = identity.peer_from_filter_state(identity.STRING_URL, raw)
    assert w is not None
    assert (w.workload, w.namespace, w.canonical_service, w.version) == (
        "details-v1",
        "default",
        "details",
        "v1",
    )
    baggage = "k8s.namespace.name=ns1,k8s.deployment.name=web,service.name=web,service.version=v3"
    raw = wrappers_pb2.BytesValue(value=baggage.encode()).SerializeToString()
    b = identity.peer_from_filter_state(identity.BYTES_URL, raw)
    assert b is not None
    assert (b.workload, b.namespace, b.canonical_service, b.version) == ("web", "ns1", "web", "v3")


def test_peer_filter_state_undecodable() -> None:
    assert identity.peer_from_filter_state("type.googleapis.com/x.FlatNode", b"\x01\x02") is None
    assert identity.peer_from_filter_state(identity.STRUCT_URL, b"\xff\xff\xff") is None
    assert identity.peer_from_filter_state(identity.STRUCT_URL, b"") is None


LOCAL = Workload(
    workload="reviews-v1",
    namespace="default",
    canonical_service="reviews",
    version="v1",
    principal="spiffe://cluster.local/ns/default/sa/reviews",
)


def test_resolve_inbound_with_mtls() -> None:
    out = identity.resolve(
        Observation(
            cluster=identity.parse_upstream_cluster("inbound|9080||"),
            local=LOCAL,
            authority="reviews:9080",
            local_principal="spiffe://cluster.local/ns/default/sa/reviews",
            peer_principal="spiffe://cluster.local/ns/front/sa/productpage",
            tls_local_cert=True,
            tls_peer_cert=True,
        )
    )
    assert out["reporter"] == "destination"
    assert out["mtls"] is True
    assert out["source_principal"] == "spiffe://cluster.local/ns/front/sa/productpage"
    assert out["source_namespace"] == "front"
    assert out["source_workload"] == "unknown"
    assert out["destination_workload"] == "reviews-v1"
    assert out["destination_service"] == "reviews.default.svc.cluster.local"


def test_resolve_inbound_plaintext_and_text_logs() -> None:
    plain = identity.resolve(
        Observation(
            cluster=identity.parse_upstream_cluster("inbound|9080||"),
            local=LOCAL,
            tls_local_cert=False,
            tls_peer_cert=False,
        )
    )
    assert plain["mtls"] is False
    assert plain["source_principal"] == "unknown"
    # text logs: no certificate data; Istio's mTLS SNI is the evidence
    text = identity.resolve(
        Observation(
            cluster=identity.parse_upstream_cluster("inbound|9080||"),
            local=identity.UNKNOWN_WORKLOAD,
            sni="outbound_.9080_.v3_.reviews.default.svc.cluster.local",
        )
    )
    assert text["mtls"] is True
    assert text["destination_version"] == "v3"
    assert text["destination_service"] == "reviews.default.svc.cluster.local"
    unknown = identity.resolve(
        Observation(cluster=identity.parse_upstream_cluster("inbound|9080||"), local=LOCAL)
    )
    assert unknown["mtls"] is None


def test_resolve_outbound_with_peer_metadata() -> None:
    peer = Workload(
        workload="ratings-v2", namespace="default", canonical_service="ratings", version="v2"
    )
    out = identity.resolve(
        Observation(
            cluster=identity.parse_upstream_cluster(
                "outbound|9080|v2|ratings.default.svc.cluster.local"
            ),
            local=LOCAL,
            upstream_peer=peer,
        )
    )
    assert out["reporter"] == "source"
    assert out["mtls"] is None
    assert out["source_workload"] == "reviews-v1"
    assert out["source_principal"] == "spiffe://cluster.local/ns/default/sa/reviews"
    assert out["destination_workload"] == "ratings-v2"
    assert out["destination_version"] == "v2"
    assert out["destination_service_name"] == "ratings"


def test_resolve_passthrough_and_blackhole() -> None:
    out = identity.resolve(
        Observation(
            cluster=identity.parse_upstream_cluster("PassthroughCluster"),
            local=LOCAL,
            authority="api.example.com",
            upstream_host="93.184.216.34",
        )
    )
    assert out["reporter"] == "source"
    assert out["destination_service"] == "api.example.com"
    assert out["destination_workload"] == "unknown"
    # A two-label external host is not a Kubernetes `name.namespace` short name.
    ext = identity.resolve(
        Observation(
            cluster=identity.parse_upstream_cluster("PassthroughCluster"),
            local=LOCAL,
            authority="httpbin.org",
        )
    )
    assert (ext["destination_service"], ext["destination_namespace"]) == (
        "httpbin.org",
        "unknown",
    )
    bh = identity.resolve(
        Observation(cluster=identity.parse_upstream_cluster("BlackHoleCluster"), local=LOCAL)
    )
    assert bh["destination_service"] == "unknown"
    assert all(v is not None for k, v in bh.items() if k != "mtls")


def test_peer_from_metadata_exchange_header() -> None:
    s = struct_pb2.Struct()
    s.update(
        {
            "NAMESPACE": "default",
            "WORKLOAD_NAME": "details-v1",
            "NAME": "details-v1-a-b",
            "SERVICE_ACCOUNT": "bookinfo-details",
            "LABELS": {"app": "details", "version": "v1"},
        }
    )
    import base64

    header = base64.b64encode(s.SerializeToString()).decode()
    w = identity.peer_from_header(header)
    assert w is not None
    assert (w.workload, w.namespace, w.canonical_service, w.version, w.principal) == (
        "details-v1",
        "default",
        "details",
        "v1",
        "spiffe://cluster.local/ns/default/sa/bookinfo-details",
    )
    pairs = identity.peer_from_header("workload=web,namespace=shop,service=web,revision=v2")
    assert pairs is not None and (pairs.workload, pairs.version) == ("web", "v2")
    for bad in (None, "", "-", "not base64 !!", "aGVsbG8="):  # last: base64 of non-Struct text
        assert identity.peer_from_header(bad) is None
