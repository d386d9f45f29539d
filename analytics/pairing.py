"""Pairing: the two reports of one request become one row (the `traffic` view). Pure SQL text.

A request between two sidecars is reported twice: by the client's proxy (reporter 'source') and
by the server's (reporter 'destination'). The two reports of one request are those of the same
hop: the same `x-request-id` AND the same destination (service name and namespace). Envoy
propagates the id along a call chain, so productpage's inbound request and its calls to details
and reviews share it: an id alone would fold three hops into one.

Within a (request id, destination service, namespace) group the client's and the server's
reports pair in time order (a hop made twice with one id gives two pairs; a retried request
gives one client report and several server reports, the extra attempts counting on their own).
Unpaired reports count on their own: a client report whose request never reached a server
proxy (UH, NR, a host outside the mesh), a server whose client has no sidecar.

A paired row takes each field from the side that knows it:
  source identity (workload, namespace, canonical service, version)   client, else server
  destination identity (workload, canonical service, version), principals, mTLS,
  the measurements (time, duration, codes, flags, bytes), node and origin      server, else client
  destination_service (the FQDN the client routed to), upstream_cluster (with the subset)
                                                                      client, else server
`reporter` is 'destination' for a paired row (its measurements), `paired` says it was paired
and `client_duration_ms` keeps the client's duration (the exporter's client histograms).

Reports without a request id (TCP connections, stripped headers) cannot be paired: the server's
count, and the client's only when the destination is unknown or a response flag says the
request never reached a proxy (Kiali's rule).

Every consumer reads this one view: the graph, signals, the edges/signals views, the judge, the
exporter, the checks and the app.
"""

from __future__ import annotations

from typing import Final

from meshlens.collector.store.schema import REQUESTS

# Envoy response flags that mean the request never reached an upstream proxy.
NEVER_REACHED_FLAGS: Final = ("UH", "NR", "UF", "UO", "NC", "DF", "URX", "LH", "UAEX")
_NEVER_REACHED_RE: Final = "(^|,)(" + "|".join(NEVER_REACHED_FLAGS) + ")(,|$)"

PAIR_KEY: Final = ("request_id", "destination_service_name", "destination_namespace")

# Identity columns: 'unknown' (or '' / NULL) means the side does not know it.
_SOURCE_FIRST: Final = (
    "source_workload",
    "source_namespace",
    "source_canonical_service",
    "source_version",
    "destination_service",
    "upstream_cluster",
)
_SERVER_KNOWN_FIRST: Final = (
    "source_principal",
    "destination_workload",
    "destination_canonical_service",
    "destination_version",
    "destination_principal",
)
_KEY_SET: Final = set(PAIR_KEY)


def _known(first: str, second: str) -> str:
    return (
        f"CASE WHEN {first} IS NOT NULL AND {first} NOT IN ('', 'unknown') THEN {first} "
        f"ELSE coalesce({second}, {first}) END"
    )


def _merged(col: str) -> str:
    if col == "reporter":
        return "CASE WHEN d.reporter IS NULL THEN s.reporter ELSE d.reporter END"
    if col in _KEY_SET:
        return f"coalesce(d.{col}, s.{col})"
    if col in _SOURCE_FIRST:
        return _known(f"s.{col}", f"d.{col}")
    if col in _SERVER_KNOWN_FIRST:
        return _known(f"d.{col}", f"s.{col}")
    # Measurements and the rest: the server's report when there is one (Kiali: "Response
    # Times are reported using destination proxy telemetry, when available").
    return f"CASE WHEN d.reporter IS NULL THEN s.{col} ELSE d.{col} END"


_COLUMNS: Final = tuple(f.name for f in REQUESTS)
_MERGED: Final = ",\n    ".join(f"{_merged(c)} AS {c}" for c in _COLUMNS)
_PLAIN: Final = ", ".join(_COLUMNS)
_KEY_SQL: Final = ", ".join(PAIR_KEY)
_JOIN_ON: Final = " AND ".join(f"s.{k} = d.{k}" for k in PAIR_KEY) + " AND s._k = d._k"

# Reports are numbered (_k) in time order within their side and key, so the n-th client report
# pairs with the n-th server report. Almost every key occurs once per side, and a window over
# every report was most of the view's cost: only keys repeated on one side are numbered, the
# rest get _k = 1 (the same numbers the window gives them).
TRAFFIC_SQL: Final = f"""
WITH req AS NOT MATERIALIZED (
    SELECT {_PLAIN}, coalesce(reporter = 'source', false) AS _side
    FROM requests
    WHERE coalesce(request_id, '') <> ''
),
dup AS (SELECT _side, {_KEY_SQL} FROM req GROUP BY ALL HAVING count(*) > 1),
with_id AS (
    SELECT * EXCLUDE (_side), 1 AS _k FROM req ANTI JOIN dup USING (_side, {_KEY_SQL})
    UNION ALL BY NAME
    SELECT * EXCLUDE (_side),
        row_number() OVER (PARTITION BY _side, {_KEY_SQL} ORDER BY ts, duration_ms, node_id) AS _k
    FROM req SEMI JOIN dup USING (_side, {_KEY_SQL})
),
s AS (SELECT * FROM with_id WHERE reporter = 'source'),
d AS (SELECT * FROM with_id WHERE reporter IS DISTINCT FROM 'source')
SELECT
    {_MERGED},
    (s.reporter IS NOT NULL AND d.reporter IS NOT NULL) AS paired,
    s.duration_ms AS client_duration_ms
FROM d FULL OUTER JOIN s ON {_JOIN_ON}
UNION ALL BY NAME
SELECT {_PLAIN}, false AS paired,
    CASE WHEN reporter = 'source' THEN duration_ms END AS client_duration_ms
FROM requests
WHERE coalesce(request_id, '') = ''
  AND (reporter IS DISTINCT FROM 'source'
       OR coalesce(destination_workload, 'unknown') IN ('', 'unknown')
       OR regexp_matches(coalesce(response_flags, '-'), '{_NEVER_REACHED_RE}'))
"""
