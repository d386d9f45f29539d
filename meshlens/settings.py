"""Settings, declared once: name, default, help text, flag and `MESHLENS_*` environment variable.

A CLI flag beats the environment, which beats the default. Every setting is listed in the README
(a test checks it). Other packages declare their settings with the same `Setting` class.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from meshlens.collector.errors import ConfigError
from meshlens.collector.store.location import StoreLocation

_DURATION_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS: Final = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_SIZE_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """'15m' -> 900.0 seconds. A bare number is seconds."""
    m = _DURATION_RE.match(str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 500ms, 30s, 15m, 2h, 7d)")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2) or "s"]


def parse_size(text: str) -> int:
    """'64MiB' -> 67108864 bytes; '4MB' -> 4000000; a bare number is bytes."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. 4MiB, 512KiB, 1GiB)")
    unit = (m.group(2) or "").lower()
    base = 1024 if "i" in unit else 1000
    mult = 1 if unit in ("", "b") else base ** ("kmgt".index(unit[0]) + 1)
    return int(float(m.group(1)) * mult)


def parse_bool(text: str) -> bool:
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r} (use true or false)")


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting. `name` is the attribute on the parsed namespace (snake_case)."""

    name: str
    default: Any
    help: str
    parse: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    secret: bool = False  # never echo the value (e.g. in --help)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "MESHLENS_" + self.name.upper()

    def resolve(self, environ: Mapping[str, str]) -> Any:
        """The value from the environment, else the default (parsed, validated)."""
        raw = environ.get(self.env)
        if raw is None:
            return self.default
        return self.convert(raw, source=self.env)

    def convert(self, raw: str, source: str | None = None) -> Any:
        try:
            value = self.parse(raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(source or self.flag, raw, str(exc)) from None
        if self.choices is not None and value not in self.choices:
            raise ConfigError(source or self.flag, raw, f"choose one of {', '.join(self.choices)}")
        return value


COMMON: Final = (
    Setting(
        "data_dir",
        StoreLocation.parse("meshlens-data"),
        "the store: a directory (WAL and Parquet), or s3://bucket/prefix to read one",
        StoreLocation.parse,
    ),
    Setting("log_level", "info", "log level", str, ("debug", "info", "warning", "error")),
)

# What the decoders keep of one client's data (collector/decode/limits.py); after the
# OpenTelemetry SDK's attribute limits (OTEL_*_ATTRIBUTE_COUNT_LIMIT, default 128).
DECODE: Final = (
    Setting(
        "attribute_count_limit",
        128,
        "attributes kept per metric data point; the rest are dropped and counted (0 = no limit)",
        int,
    ),
    Setting(
        "attribute_value_length_limit",
        0,
        "characters kept of a text attribute value (also in arrays) (0 = no limit)",
        int,
    ),
    Setting(
        "resource_attribute_count_limit",
        128,
        "attributes kept per resource (0 = no limit)",
        int,
    ),
    Setting("span_attribute_count_limit", 128, "attributes kept per span (0 = no limit)", int),
    Setting(
        "log_record_attribute_count_limit",
        128,
        "attributes kept per log record (0 = no limit)",
        int,
    ),
    Setting(
        "ingest_max_future",
        3600.0,
        "received spans, logs, points and requests stamped later than their receipt plus this "
        "are stored at their receipt time, and counted (clock skew; 0 = no limit)",
        parse_duration,
    ),
    Setting(
        "ingest_max_age",
        0.0,
        "received rows stamped earlier than their receipt minus this are dropped and counted "
        "(0 = keep any age; retention still expires them; `meshlens import` is not limited)",
        parse_duration,
    ),
)

SERVE: Final = (
    Setting("grpc_port", 4317, "OTLP/gRPC and Envoy ALS port (0 = ephemeral)", int),
    Setting("http_port", 4318, "OTLP/HTTP port (0 = ephemeral, -1 = off)", int),
    Setting("api_port", 8080, "HTTP API, /metrics, /healthz, /readyz port (0 = ephemeral)", int),
    Setting("host", "127.0.0.1", "address every port binds to (0.0.0.0 in containers)", str),
    Setting(
        "durability",
        "fsync",
        "fsync: ack after fsync; none: ack after write()",
        str,
        ("fsync", "none"),
    ),
    Setting(
        "flush_interval", 1.0, "how often the WAL segment rolls over to Parquet (s)", parse_duration
    ),
    Setting("max_message_size", 16 * 1024 * 1024, "largest accepted request body", parse_size),
    Setting(
        "memory_budget",
        64 * 1024 * 1024,
        "bytes of requests in flight before backpressure",
        parse_size,
    ),
    Setting(
        "disk_budget",
        128 * 1024 * 1024,
        "WAL bytes not yet converted before backpressure, which keeps ingest at the speed of "
        "conversion (a few seconds of lag) (0 = no limit)",
        parse_size,
    ),
    Setting(
        "retention", 7 * 86400.0, "delete data older than this (0 = keep forever)", parse_duration
    ),
    Setting(
        "compact_after", 120.0, "compact a partition's small files once this old", parse_duration
    ),
    Setting(
        "decode_workers",
        2,
        "decoder worker processes converting WAL segments to Parquet in parallel; 2 lets "
        "conversion use both cores of a 2-core machine (0 = decode in a thread)",
        int,
    ),
    Setting(
        "query_workers",
        2,
        "API query worker processes: graph, signals, health, SQL, canary/gate judging and Istio "
        "checks run there, off the ingest path; also the cap on concurrent API queries "
        "(0 = run them in the API's threads, in the collector process)",
        int,
    ),
    Setting(
        "query_memory",
        2 * 1024**3,
        "address space of one query worker (RLIMIT_AS; >= 1GiB, ~0.8GiB is libraries); "
        "DuckDB gets a quarter as its memory_limit; a query over it fails alone (0 = no limit)",
        parse_size,
    ),
    Setting(
        "query_timeout",
        120.0,
        "wall-clock limit of one API query, result conversion included: past it the worker is "
        "killed and replaced and the answer is 408 (SQL's own timeout is capped by it)",
        parse_duration,
    ),
    Setting(
        "query_queue",
        8,
        "API queries that may wait for a busy query worker; more get 503 with Retry-After",
        int,
    ),
    Setting(
        "query_queue_wait",
        5.0,
        "how long an API query waits for a free query worker before 503 with Retry-After",
        parse_duration,
    ),
    Setting(
        "query_max_response",
        64 * 1024 * 1024,
        "largest API query response body (JSON); a larger one is refused with 413",
        parse_size,
    ),
    Setting(
        "query_temp_budget",
        2 * 1024**3,
        "disk for the spill files of API SQL queries larger than memory, shared by the query "
        "workers, in <data-dir>/.tmp-query/ (emptied at start)",
        parse_size,
    ),
    Setting(
        "conversion_attempts",
        5,
        "failed conversions of a WAL segment (its own fault: not a full disk, not a crash of "
        "a worker it shared) before it moves to <data-dir>/deadletter/ (0 = retry forever)",
        int,
    ),
    Setting("node", "local", "this collector's name in segment file names ([a-z0-9-])", str),
    Setting(
        "auth_token", "", "bearer token required on every receiver and the API", str, secret=True
    ),
    Setting("tls_cert", "", "PEM certificate for gRPC and HTTP receivers", str),
    Setting("tls_key", "", "PEM private key for --tls-cert", str),
    Setting(
        "tls_client_ca", "", "PEM CA bundle; when set, clients must present a certificate", str
    ),
    Setting(
        "http_idle_timeout",
        60.0,
        "an OTLP/HTTP or API connection silent this long (between requests or mid-body) is "
        "closed (0 = never)",
        parse_duration,
    ),
    Setting(
        "http_max_connections",
        256,
        "open connections per HTTP port (OTLP/HTTP, API); more are answered 503 and closed, so "
        "idle clients cannot use up the process's file descriptors (0 = no cap)",
        int,
    ),
    Setting(
        "api_allowed_hosts",
        "localhost,*.localhost,meshlens.meshlens,*.svc,*.svc.cluster.local",
        "without --auth-token: Host names the API answers besides IP addresses, single-label "
        "names and --host (comma-separated, *.suffix allowed, * = any); guards against DNS "
        "rebinding",
        str,
    ),
    Setting(
        "identity_binding",
        "off",
        "with --tls-client-ca: compare the client certificate's SPIFFE ID with the node identity "
        "an ALS/OTLP sender claims; warn: log a mismatch; enforce: refuse it (PERMISSION_DENIED)",
        str,
        ("off", "warn", "enforce"),
    ),
    Setting(
        "canary_prometheus_url",
        "",
        "the only Prometheus POST /api/v1/canary/analyze queries (promql metrics, source "
        "prometheus); a request naming another URL is refused ('' = none)",
        str,
    ),
    *DECODE,
)


def parse_object_store(text: str) -> str:
    """'' (off) or an `s3://bucket[/prefix]` location, normalized."""
    if not str(text).strip():
        return ""
    # Imported here: the URL rules live with the shipper; config stays import-light.
    from meshlens.collector.store.location import StoreUrl

    return str(StoreUrl.parse(text))


# Scale-out: ship finished Parquet files to S3-compatible object storage (collector/store/
# objectstore.py). Readers take the endpoint and region from the same environment variables.
OBJECT_STORE: Final = (
    Setting(
        "object_store",
        "",
        "commit finished Parquet files to the Delta tables at s3://bucket/prefix ('' = off)",
        parse_object_store,
    ),
    Setting(
        "s3_endpoint_url",
        "",
        "endpoint of an S3-compatible store, e.g. http://minio:9000 ('' = AWS)",
        str,
    ),
    Setting("s3_region", "us-east-1", "region of the object store", str),
    Setting("ship_interval", 5.0, "how often new Parquet files are shipped (s)", parse_duration),
    Setting(
        "vacuum_grace",
        3600.0,
        "how long files a commit removed stay in the object store for readers of older "
        "snapshots before VACUUM deletes them (s, rounded up to hours)",
        parse_duration,
    ),
)

# The container image's entrypoint (meshlens/container.py): an environment variable only.
ALLOW_OPEN: Final = Setting(
    "allow_open",
    False,
    "container image: let `meshlens serve` listen on a non-loopback address with neither "
    "--auth-token nor --tls-client-ca (only when something else guards the ports)",
    parse_bool,
)


def _shown(s: Setting, value: Any) -> str:
    if s.secret:
        return "set" if value else "none"
    return str(value)


def add_settings(
    parser: argparse.ArgumentParser,
    settings: Iterable[Setting],
    environ: Mapping[str, str] | None = None,
) -> None:
    """Add a flag per setting; the flag's default comes from the environment or the default."""
    env = os.environ if environ is None else environ
    for s in settings:
        default = s.resolve(env)
        parser.add_argument(
            s.flag,
            dest=s.name,
            default=default,
            type=s.convert,
            help=f"{s.help} (env {s.env}; default {_shown(s, default)})",
        )


ALL_SETTINGS: list[Setting] = [*COMMON, *SERVE, *OBJECT_STORE]
