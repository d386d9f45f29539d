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

import hashlib
from typing import Final

from meshlens.collector.store.schema import REQUESTS

# Envoy response flags that mean the request never reached an upstream proxy.
NEVER_REACHED_FLAGS: Final = ("UH", "NR", "UF", "UO", "NC", "DF", "URX", "LH", "UAEX")
_NEVER_REACHED_RE: Final = "(^|,)(" + "|".join(NEVER_REACHED_FLAGS) + ")(,|$)"

PAIR_KEY: Final = ("request_id", "destination_service_name", "destination_namespace")

# How a paired row takes each column (the one table both executors read: the SQL below for the
# window still being written, analytics/pairing_arrow.py for the hours stored already paired).
KEY: Final = "key"  # either side: they are equal
SOURCE_FIRST: Final = "source_first"  # the client's value when known, else the server's
SERVER_KNOWN_FIRST: Final = "server_known_first"  # the server's value when known, else the client's
SERVER_SIDE: Final = "server_side"  # the server's report when there is one, known or not

_SOURCE_FIRST_COLUMNS: Final = (
    "source_workload",
    "source_namespace",
    "source_canonical_service",
    "source_version",
    "destination_service",
    "upstream_cluster",
)
_SERVER_KNOWN_FIRST_COLUMNS: Final = (
    "source_principal",
    "destination_workload",
    "destination_canonical_service",
    "destination_version",
    "destination_principal",
)


def merge_rule(column: str) -> str:
    """How the paired row takes `column` from the client's (s) and the server's (d) report."""
    if column in PAIR_KEY:
        return KEY
    if column in _SOURCE_FIRST_COLUMNS:
        return SOURCE_FIRST
    if column in _SERVER_KNOWN_FIRST_COLUMNS:
        return SERVER_KNOWN_FIRST
    # Measurements, reporter and the rest: the server's report when there is one (Kiali:
    # "Response Times are reported using destination proxy telemetry, when available").
    return SERVER_SIDE


# 'unknown', '' and NULL mean the side does not know the value.
UNKNOWN_VALUES: Final = ("", "unknown")
COLUMNS: Final = tuple(f.name for f in REQUESTS)
# The columns the view adds to the requests schema.
PAIRED_COLUMN: Final = "paired"
CLIENT_DURATION_COLUMN: Final = "client_duration_ms"


def _known(first: str, second: str) -> str:
    unknown = ", ".join(f"'{v}'" for v in UNKNOWN_VALUES)
    return (
        f"CASE WHEN {first} IS NOT NULL AND {first} NOT IN ({unknown}) THEN {first} "
        f"ELSE coalesce({second}, {first}) END"
    )


def _merged(col: str) -> str:
    rule = merge_rule(col)
    if rule == KEY:
        return f"coalesce(d.{col}, s.{col})"
    if rule == SOURCE_FIRST:
        return _known(f"s.{col}", f"d.{col}")
    if rule == SERVER_KNOWN_FIRST:
        return _known(f"d.{col}", f"s.{col}")
    # _k is set on every report that takes part, so NULL means the side has no report.
    return f"CASE WHEN d._k IS NULL THEN s.{col} ELSE d.{col} END"


_MERGED: Final = ",\n    ".join(f"{_merged(c)} AS {c}" for c in COLUMNS)
_KEY_SQL: Final = ", ".join(PAIR_KEY)
_JOIN_ON: Final = " AND ".join(f"s.{k} = d.{k}" for k in PAIR_KEY) + " AND s._k = d._k"
# The order in which reports of one key and side pair: time, then enough tie-breakers that
# reports differing in what they say (a retried 503 beside a 200) pair the same way every run.
_ORDER: Final = (
    "ts",
    "duration_ms",
    "node_id",
    "response_code",
    "response_flags",
    "upstream_cluster",
    "response_bytes",
)
_ALONE: Final = f"""coalesce(request_id, '') = ''
  AND (reporter IS DISTINCT FROM 'source'
       OR coalesce(destination_workload, 'unknown') IN ('', 'unknown')
       OR regexp_matches(coalesce(response_flags, '-'), '{_NEVER_REACHED_RE}'))"""


def _paired_ctes(source: str, columns: str, source_sql: str | None = None) -> str:
    """The reports with a request id, numbered (_k) in time order within their side and key, so
    the n-th client report pairs with the n-th server report. Almost every key occurs once per
    side, and a window over every report was most of the cost: only keys repeated on one side
    are numbered, the rest get _k = 1 (the same numbers the window gives them)."""
    defined = f"{source} AS NOT MATERIALIZED ({source_sql}),\n" if source_sql else ""
    return f"""WITH {defined}req AS NOT MATERIALIZED (
    SELECT {columns}, coalesce(reporter = 'source', false) AS _side
    FROM {source}
    WHERE coalesce(request_id, '') <> ''
),
dup AS (SELECT _side, {_KEY_SQL} FROM req GROUP BY ALL HAVING count(*) > 1),
with_id AS (
    SELECT * EXCLUDE (_side), 1 AS _k FROM req ANTI JOIN dup USING (_side, {_KEY_SQL})
    UNION ALL BY NAME
    SELECT * EXCLUDE (_side),
        row_number() OVER (PARTITION BY _side, {_KEY_SQL} ORDER BY {", ".join(_ORDER)}) AS _k
    FROM req SEMI JOIN dup USING (_side, {_KEY_SQL})
),
s AS (SELECT * FROM with_id WHERE reporter = 'source'),
d AS (SELECT * FROM with_id WHERE reporter IS DISTINCT FROM 'source')"""


def traffic_sql(source: str = "requests", source_sql: str | None = None) -> str:
    """The paired rows of the reports in relation `source` (a requests-shaped view, or the
    query `source_sql` under that name)."""
    plain = ", ".join(COLUMNS)
    return f"""
{_paired_ctes(source, plain, source_sql)}
SELECT
    {_MERGED},
    (s._k IS NOT NULL AND d._k IS NOT NULL) AS {PAIRED_COLUMN},
    s.duration_ms AS {CLIENT_DURATION_COLUMN}
FROM d FULL OUTER JOIN s ON {_JOIN_ON}
UNION ALL BY NAME
SELECT {plain}, false AS {PAIRED_COLUMN},
    CASE WHEN reporter = 'source' THEN duration_ms END AS {CLIENT_DURATION_COLUMN}
FROM {source}
WHERE {_ALONE}
"""


def pair_index_sql(source: str) -> str:
    """Who pairs with whom, by row number: one row (di, si) per row of `traffic_sql(source)`,
    di the server's report and si the client's (NULL when that side has none). `source` must
    have a BIGINT column `_i` numbering its rows. The same rules as traffic_sql, reading only
    the key and order columns: joining two narrow relations and gathering the columns after
    (pairing_arrow.py) is what makes pairing an hour of 10M reports take seconds, not minutes."""
    cols = ", ".join(("_i", "reporter", *PAIR_KEY, *_ORDER))
    return f"""
{_paired_ctes(source, cols)}
SELECT d._i AS di, s._i AS si
FROM d FULL OUTER JOIN s ON {_JOIN_ON}
UNION ALL
SELECT
    CASE WHEN reporter IS DISTINCT FROM 'source' THEN _i END AS di,
    CASE WHEN reporter = 'source' THEN _i END AS si
FROM {source}
WHERE {_ALONE}
"""


TRAFFIC_SQL: Final = traffic_sql("requests")
# Changes whenever a rule above changes: stored paired hours made under other rules are stale.
PAIRING_VERSION: Final = hashlib.sha256(
    (traffic_sql("requests") + pair_index_sql("requests") + repr(COLUMNS)).encode()
).hexdigest()[:16]
