"""Everything the Streamlit pages read, and the only module of the app that touches `analytics`.

Each loader is a `st.cache_data` function keyed by plain values (data dir, window bounds rounded
to `WINDOW_STEP_S`, filters), so pages re-run cheaply and auto-refresh reuses work. Filters go
into SQL (`WHERE ... LIMIT`): a page never loads more rows than it shows, and every connection is
opened over the window's partitions only (analytics.catalog prunes dt/hr directories), which is
what keeps the pages responsive on a 10M-row store.

One module per page (mesh, service, canary, sql, traces, istio) over `common` (the store,
the window, the cache rules); this package re-exports their public names, so pages write
`data.service_graph(...)`.
"""

from __future__ import annotations

from meshlens.dashboards.data.canary import (
    gate_state,
    rollouts,
    verdict_history,
    verdict_metrics,
    version_latencies,
)
from meshlens.dashboards.data.common import (
    DATA_DIR_ENV,
    LEVELS,
    MAX_ROWS,
    TO_SERVICE,
    TTL_S,
    WINDOW_STEP_S,
    WINDOWS,
    Window,
    data_dir,
    rounded_now,
    time_extent,
)
from meshlens.dashboards.data.istio import (
    ISTIO_CONFIG_ENV,
    CheckOutcome,
    istio_check,
    istio_config_text,
)
from meshlens.dashboards.data.mesh import (
    namespaces,
    service_graph,
)
from meshlens.dashboards.data.service import (
    codes_by_flags,
    golden_signals,
    inbound,
    outbound,
    services,
)
from meshlens.dashboards.data.sql import (
    EXAMPLES,
    SqlOutcome,
    run_sql,
    to_parquet_bytes,
)
from meshlens.dashboards.data.traces import (
    recent_traces,
    search_requests,
    trace_spans,
)

__all__ = [
    "DATA_DIR_ENV",
    "EXAMPLES",
    "ISTIO_CONFIG_ENV",
    "LEVELS",
    "MAX_ROWS",
    "TO_SERVICE",
    "TTL_S",
    "WINDOWS",
    "WINDOW_STEP_S",
    "CheckOutcome",
    "SqlOutcome",
    "Window",
    "codes_by_flags",
    "data_dir",
    "gate_state",
    "golden_signals",
    "inbound",
    "istio_check",
    "istio_config_text",
    "namespaces",
    "outbound",
    "recent_traces",
    "rollouts",
    "rounded_now",
    "run_sql",
    "search_requests",
    "service_graph",
    "services",
    "time_extent",
    "to_parquet_bytes",
    "trace_spans",
    "verdict_history",
    "verdict_metrics",
    "version_latencies",
]
