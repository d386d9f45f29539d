"""The traffic Istio's docs describe, as the proxies would log it, through meshlens' own decoders.

A `Call` is one curl (or one Bookinfo hop) between two pods. Each proxy on the way writes one
access-log entry: the client's sidecar an outbound one, the server's sidecar an inbound one (a
pod without a sidecar writes nothing). The entries are rendered in one of three telemetry
flavours and decoded by the code paths that ingest them in production:

- FULL: what the gRPC ALS gives (node metadata with labels and service account, peer
  certificates, Istio's peer metadata), as Istio's JSON log fields decoded by
  `fields_to_row` with the proxy's node workload;
- IMPORT: Istio's default text access log of each pod, imported as
  `meshlens import accesslog --proxy-pod <pod> --proxy-namespace <ns>` does (`import_files`):
  the reporting workload is known, its labels, service account and peers are not;
- OTEL: Istio's default OpenTelemetry access log (the same text line as the record body, no
  attributes, no resource labels), decoded by `otel_access_log_to_request`: no workload names.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from meshlens.collector.commands.importer import import_files
from meshlens.collector.decode import identity
from meshlens.collector.decode.access_log_text import parse_access_log_line
from meshlens.collector.decode.otel_als import otel_access_log_to_request
from meshlens.collector.decode.request_rows import rows_to_table
from meshlens.collector.store.parquet_write import write_table

T0: Final = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
FULL: Final = "full"
IMPORT: Final = "import"
OTEL: Final = "otel"
FLAVOURS: Final = (FULL, IMPORT, OTEL)
_WRITES = itertools.count()  # request ids are unique across writes, as x-request-id UUIDs are


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    workload: str  # the Deployment
    app: str
    version: str
    service_account: str
    ip: str
    sidecar: bool = True

    @property
    def pod(self) -> str:
        return f"{self.workload}-5c8d9b7f4d-x7k2p"

    @property
    def spiffe(self) -> str:
        return f"spiffe://cluster.local/ns/{self.namespace}/sa/{self.service_account}"

    def peer_metadata(self) -> str:
        """Istio's peer metadata as `k=v` pairs (what metadata exchange tells the other end)."""
        return (
            f"namespace={self.namespace},workload={self.workload},service={self.app},"
            f"version={self.version},app={self.app},identity={self.spiffe}"
        )

    def node(self) -> identity.Workload:
        node_id = (
            f"sidecar~{self.ip}~{self.pod}.{self.namespace}~{self.namespace}.svc.cluster.local"
        )
        return identity.workload_from_node(
            node_id,
            {
                "NAMESPACE": self.namespace,
                "WORKLOAD_NAME": self.workload,
                "NAME": self.pod,
                "SERVICE_ACCOUNT": self.service_account,
                "LABELS": {"app": self.app, "version": self.version},
            },
        )


@dataclass(frozen=True, slots=True)
class Call:
    src: Pod
    dst: Pod
    service: str  # FQDN of the Kubernetes Service called
    port: int  # the Service port
    target_port: int  # the workload (container) port
    authority: str
    method: str = "GET"
    path: str = "/"
    subset: str = ""  # the DestinationRule subset a VirtualService routed to
    code: int = 200
    n: int = 1

    @property
    def mtls(self) -> bool:
        """Istio's auto mTLS: sidecar to sidecar is mutual TLS, anything else plaintext."""
        return self.src.sidecar and self.dst.sidecar


def _start(i: int) -> str:
    return (T0 + timedelta(seconds=1 + i)).isoformat().replace("+00:00", "Z")


def _sni(c: Call) -> str:
    return f"outbound_.{c.port}_.{c.subset or '_'}_.{c.service}" if c.mtls else "-"


def _fields(c: Call, i: int, rid: str, side: str) -> dict[str, Any]:
    inbound = side == "destination"
    cluster = (
        f"inbound|{c.target_port}||" if inbound else f"outbound|{c.port}|{c.subset}|{c.service}"
    )
    return {
        "start_time": _start(i),
        "method": c.method,
        "path": c.path,
        "protocol": "HTTP/1.1",
        "response_code": c.code,
        "response_flags": "-",
        "response_code_details": "via_upstream",
        "bytes_received": 0,
        "bytes_sent": 120,
        "duration": 3 if inbound else 4,
        "user_agent": "curl/8.5.0",
        "request_id": rid,
        "authority": c.authority,
        "upstream_host": f"{c.dst.ip}:{c.target_port}",
        "upstream_cluster": cluster,
        "upstream_local_address": "127.0.0.6:41000" if inbound else f"{c.src.ip}:42000",
        "downstream_local_address": f"{c.dst.ip}:{c.target_port}"
        if inbound
        else f"10.96.0.10:{c.port}",
        "downstream_remote_address": f"{c.src.ip}:43000",
        "requested_server_name": _sni(c) if inbound else "-",
        "route_name": "default",
    }


def _text_line(f: dict[str, Any]) -> str:
    """Istio's default text format (EnvoyTextLogFormat)."""
    return (
        f'[{f["start_time"]}] "{f["method"]} {f["path"]} {f["protocol"]}" {f["response_code"]} '
        f'{f["response_flags"]} {f["response_code_details"]} - "-" {f["bytes_received"]} '
        f'{f["bytes_sent"]} {f["duration"]} 2 "-" "{f["user_agent"]}" "{f["request_id"]}" '
        f'"{f["authority"]}" "{f["upstream_host"]}" {f["upstream_cluster"]} '
        f"{f['upstream_local_address']} {f['downstream_local_address']} "
        f"{f['downstream_remote_address']} {f['requested_server_name']} {f['route_name']}"
    )


def entries(
    calls: Sequence[Call], prefix: str = "req"
) -> Iterable[tuple[Pod, str, dict[str, Any], Call]]:
    """(reporting pod, 'source'|'destination', log fields, call) for every proxy entry."""
    k = 0
    for ci, c in enumerate(calls):
        for j in range(c.n):
            rid = f"{prefix}-{ci}-{j}"
            k += 1
            if c.src.sidecar:
                yield c.src, "source", _fields(c, k, rid, "source"), c
            if c.dst.sidecar:
                yield c.dst, "destination", _fields(c, k, rid, "destination"), c


def _full_row(pod: Pod, side: str, f: dict[str, Any], c: Call) -> dict[str, Any] | None:
    f = dict(f)
    if side == "destination":
        f["downstream_local_uri_san"] = c.dst.spiffe if c.mtls else "-"
        f["downstream_peer_uri_san"] = c.src.spiffe if c.mtls else "-"
        if c.src.sidecar:
            f["downstream_peer"] = c.src.peer_metadata()
    elif c.dst.sidecar:
        f["upstream_peer"] = c.dst.peer_metadata()
    return parse_access_log_line(
        json.dumps(f), local=pod.node(), node_id=pod.pod, origin="envoy_als"
    )


def write_traffic(data_dir: Path, calls: Sequence[Call], flavour: str) -> int:
    """Decode the calls' log entries in `flavour` into `data_dir`; returns rows written."""
    prefix = f"w{next(_WRITES)}"
    if flavour == IMPORT:
        by_pod: dict[Pod, list[str]] = {}
        for pod, _side, f, _c in entries(calls, prefix):
            by_pod.setdefault(pod, []).append(_text_line(f))
        written = 0
        for i, (pod, lines) in enumerate(by_pod.items()):
            path = data_dir.parent / f"{data_dir.name}-{prefix}-{pod.namespace}-{pod.workload}.log"
            path.write_text("\n".join(lines) + "\n")
            stats = import_files(
                data_dir,
                [str(path)],
                local=identity.Workload(
                    workload=identity.workload_from_pod(pod.pod),
                    namespace=pod.namespace,
                    pod=pod.pod,
                ),
                node=f"import-{prefix}-{i}",
            )
            written += stats.rows
        return written
    rows: list[dict[str, Any]] = []
    for pod, side, f, c in entries(calls, prefix):
        if flavour == FULL:
            row = _full_row(pod, side, f, c)
        else:
            row = otel_access_log_to_request(_text_line(f), {}, {}, 0)
        assert row is not None, f
        rows.append(row)
    if rows:
        write_table(data_dir, "requests", rows_to_table(rows), f"conformance-{prefix}", 1)
    return len(rows)


# --- the docs' workloads -------------------------------------------------------------------

NAMESPACES: Final = ("foo", "bar", "legacy")


def sleep(ns: str) -> Pod:
    return Pod(
        ns, "sleep", "sleep", "unknown", "sleep", f"10.1.{NAMESPACES.index(ns)}.10", ns != "legacy"
    )


def httpbin(ns: str) -> Pod:
    return Pod(
        ns, "httpbin", "httpbin", "v1", "httpbin", f"10.1.{NAMESPACES.index(ns)}.20", ns != "legacy"
    )


def curl_httpbin(frm: str, to: str, path: str = "/ip", method: str = "GET", n: int = 1) -> Call:
    """`kubectl exec sleep -n <frm> -- curl http://httpbin.<to>:8000<path>` (httpbin's Service
    port 8000 targets container port 80 in the sample of that time)."""
    return Call(
        sleep(frm),
        httpbin(to),
        f"httpbin.{to}.svc.cluster.local",
        8000,
        80,
        f"httpbin.{to}:8000",
        method=method,
        path=path,
        n=n,
    )


def authn_task_traffic() -> list[Call]:
    """The task's reachability loop, every pair but legacy -> legacy (no proxy logs it)."""
    return [
        curl_httpbin(frm, to)
        for frm in NAMESPACES
        for to in NAMESPACES
        if not (frm == "legacy" and to == "legacy")
    ]


PRODUCTPAGE: Final = Pod(
    "default", "productpage-v1", "productpage", "v1", "bookinfo-productpage", "10.2.0.10"
)
DETAILS: Final = Pod("default", "details-v1", "details", "v1", "bookinfo-details", "10.2.0.11")
RATINGS: Final = Pod("default", "ratings-v1", "ratings", "v1", "bookinfo-ratings", "10.2.0.12")
INGRESS: Final = Pod(
    "istio-system",
    "istio-ingressgateway",
    "istio-ingressgateway",
    "unknown",
    "istio-ingressgateway-service-account",
    "10.2.9.9",
)


def reviews(version: str) -> Pod:
    return Pod(
        "default",
        f"reviews-{version}",
        "reviews",
        version,
        "bookinfo-reviews",
        f"10.2.1.{version[1:]}",
    )


def bookinfo_call(src: Pod, dst: Pod, path: str, n: int = 1, subset: str = "") -> Call:
    return Call(
        src,
        dst,
        f"{dst.app}.default.svc.cluster.local",
        9080,
        9080,
        f"{dst.app}:9080",
        path=path,
        subset=subset,
        n=n,
    )


def bookinfo_page_loads(n: int = 3) -> list[Call]:
    """`n` loads of /productpage through the ingress gateway: productpage calls details and
    reviews (round robin over v1, v2, v3); reviews v2 and v3 call ratings."""
    calls = [bookinfo_call(INGRESS, PRODUCTPAGE, "/productpage", n=n * 3)]
    calls.append(bookinfo_call(PRODUCTPAGE, DETAILS, "/details/0", n=n * 3))
    for v in ("v1", "v2", "v3"):
        calls.append(bookinfo_call(PRODUCTPAGE, reviews(v), "/reviews/0", n=n))
    for v in ("v2", "v3"):
        calls.append(bookinfo_call(reviews(v), RATINGS, "/ratings/0", n=n))
    return calls


def reviews_split(counts: dict[str, int], subsets: bool = True) -> list[Call]:
    """productpage -> reviews requests that landed on each version (routed to its subset)."""
    return [
        bookinfo_call(PRODUCTPAGE, reviews(v), "/reviews/0", n=k, subset=v if subsets else "")
        for v, k in counts.items()
        if k
    ]
