"""Assemble a small Istio-like mesh on loopback: workloads, their sidecars and who calls whom.

    mesh = LocalMesh(workdir, Collector("127.0.0.1", grpc_port))
    reviews_v1 = mesh.add_workload("reviews", "v1", app_port=app1.port)
    reviews_v2 = mesh.add_workload("reviews", "v2", app_port=app2.port)
    pp = mesh.add_workload("productpage", "v1", app_port=app3.port)
    mesh.connect(pp, "reviews", weights={"v1": 100, "v2": 0})
    with mesh:                                  # starts every sidecar, waits until ready
        url = mesh.outbound_url(pp, "reviews")  # http://127.0.0.1:<port> (send Host: reviews:9080)
        mesh.sidecar(pp).set_weights("reviews", {"v1": 90, "v2": 10})

Ports are allocated when workloads/connections are added. Each service gets one certificate
identity `spiffe://<trust-domain>/ns/<ns>/sa/<app>`, as bookinfo's service accounts do.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final

from meshlens.localmesh.bootstrap import Collector, SidecarSpec, Subset, Upstream
from meshlens.localmesh.certs import CertFiles, DemoCA
from meshlens.localmesh.envoy import EnvoySidecar
from meshlens.localmesh.ports import free_port

DEFAULT_PORT: Final = 9080


@dataclass(slots=True)
class MeshWorkload:
    app: str
    version: str
    namespace: str
    service_port: int
    inbound_port: int
    app_port: int
    certs: CertFiles
    upstreams: list[Upstream] = field(default_factory=list)
    collector: Collector | None = None  # None: the mesh's default
    tcp: bool = False  # a TCP service (the sidecars proxy bytes, ALS sends TCP entries)

    @property
    def key(self) -> str:
        return f"{self.app}-{self.version}.{self.namespace}"

    @property
    def host(self) -> str:
        return f"{self.app}.{self.namespace}.svc.cluster.local"


class LocalMesh:
    """Workloads with sidecars; `start()` launches every sidecar in parallel."""

    def __init__(
        self,
        workdir: Path,
        collector: Collector,
        *,
        trust_domain: str = "cluster.local",
        log_level: str = "warning",
    ) -> None:
        self.workdir = Path(workdir)
        self.collector = collector
        self.ca = DemoCA(self.workdir / "certs", trust_domain)
        self.log_level = log_level
        self.workloads: dict[str, MeshWorkload] = {}
        self.sidecars: dict[str, EnvoySidecar] = {}
        self._certs: dict[tuple[str, str], CertFiles] = {}

    def add_workload(
        self,
        app: str,
        version: str,
        *,
        app_port: int,
        namespace: str = "default",
        service_port: int = DEFAULT_PORT,
        inbound_port: int = 0,
        tcp: bool = False,
        collector: Collector | None = None,
    ) -> MeshWorkload:
        key = (namespace, app)
        if key not in self._certs:
            self._certs[key] = self.ca.issue(namespace, app, f"{namespace}.{app}")
        w = MeshWorkload(
            app,
            version,
            namespace,
            service_port,
            inbound_port or free_port(),
            app_port,
            self._certs[key],
            tcp=tcp,
            collector=collector,
        )
        if w.key in self.workloads:
            raise ValueError(f"workload {w.key} already added")
        self.workloads[w.key] = w
        return w

    def versions_of(self, app: str, namespace: str = "default") -> list[MeshWorkload]:
        return [w for w in self.workloads.values() if w.app == app and w.namespace == namespace]

    def connect(
        self,
        client: MeshWorkload,
        app: str,
        *,
        namespace: str = "default",
        weights: dict[str, int] | None = None,
        extra_subsets: tuple[str, ...] = (),
        listen_port: int = 0,
        timeout_s: float = 5.0,
        retries: int = 0,
    ) -> Upstream:
        """Let `client` call service `app` through an outbound listener. One subset per
        version of `app` (weights default: equal); `extra_subsets` are subsets without
        endpoints (requests routed there fail with UH)."""
        targets = self.versions_of(app, namespace)
        if not targets and not extra_subsets:
            raise ValueError(f"no workload of {app}.{namespace} to connect to")
        weights = weights or {t.version: 100 for t in targets}
        subsets = [
            Subset(t.version, t.inbound_port, t.certs.spiffe_id, weights.get(t.version, 0))
            for t in targets
        ]
        subsets += [Subset(name, None, "", weights.get(name, 0)) for name in extra_subsets]
        port = targets[0].service_port if targets else DEFAULT_PORT
        up = Upstream(
            f"{app}.{namespace}.svc.cluster.local",
            port,
            listen_port or free_port(),
            tuple(subsets),
            timeout_s=timeout_s,
            retries=retries,
            tcp=bool(targets) and targets[0].tcp,
        )
        client.upstreams.append(up)
        return up

    def spec(self, w: MeshWorkload) -> SidecarSpec:
        return SidecarSpec(
            app=w.app,
            version=w.version,
            namespace=w.namespace,
            service_port=w.service_port,
            inbound_port=w.inbound_port,
            app_port=w.app_port,
            certs=w.certs,
            collector=w.collector or self.collector,
            upstreams=tuple(w.upstreams),
            tcp=w.tcp,
        )

    def sidecar(self, w: MeshWorkload | str) -> EnvoySidecar:
        return self.sidecars[w if isinstance(w, str) else w.key]

    def outbound_url(self, client: MeshWorkload, app: str, namespace: str = "default") -> str:
        host = f"{app}.{namespace}.svc.cluster.local"
        for up in client.upstreams:
            if up.host == host:
                return f"http://127.0.0.1:{up.listen_port}"
        raise KeyError(f"{client.key} is not connected to {host}")

    def start(self, timeout: float = 30.0) -> LocalMesh:
        sidecars = {
            k: EnvoySidecar(self.spec(w), self.workdir / "envoy", log_level=self.log_level)
            for k, w in self.workloads.items()
        }
        self.sidecars = sidecars
        try:
            with ThreadPoolExecutor(max_workers=max(1, len(sidecars))) as pool:
                for f in [pool.submit(s.start, timeout) for s in sidecars.values()]:
                    f.result()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for s in self.sidecars.values():
            s.stop()

    def __enter__(self) -> LocalMesh:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
