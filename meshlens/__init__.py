"""meshlens: observability pipeline and analytics for Istio/Envoy service meshes.

The one installed package. Its parts are the repository's folders: `meshlens.collector`
(receivers, decoders, WAL and Parquet store), `meshlens.analytics` (graph, signals, judge, gate,
Istio checks, SQL), `meshlens.dashboards` (Streamlit app, Grafana). This folder holds what they
share (`settings`, `httpd`, `child_process`, `durable_file`), the composition roots (`cli`,
`serve`, `server`, the image's `container`) and, apart from the product, the local mesh and
the demo (`localmesh`, `demo`, `synth`).
"""
