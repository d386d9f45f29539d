"""A real local mesh on loopback: demo CA + SPIFFE certificates, Istio-like Envoy sidecars
(bootstrap builder), an Envoy launcher and a tiny app — used by tests, the gate's Envoy tests
and `meshlens demo`.

    certs.py      DemoCA, spiffe_id, CertFiles
    bootstrap.py  SidecarSpec/Upstream/Subset/Collector -> Envoy bootstrap dict; runtime keys
    envoy.py      EnvoyProcess / EnvoySidecar (start, readiness, admin, set_weights, stop)
    mesh.py       LocalMesh: workloads, who calls whom (weights), start/stop all sidecars
    app.py        TinyApp, an HTTP app for behind a sidecar
    ports.py      free loopback ports
"""
