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
from pathlib import Path
from typing import Any, Final

from collector.errors import ConfigError

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
    Setting("data_dir", Path("meshlens-data"), "directory of the store (WAL and Parquet)", Path),
    Setting("log_level", "info", "log level", str, ("debug", "info", "warning", "error")),
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
    Setting("node", "local", "this collector's name in segment file names ([a-z0-9-])", str),
    Setting(
        "auth_token", "", "bearer token required on every receiver and the API", str, secret=True
    ),
    Setting("tls_cert", "", "PEM certificate for gRPC and HTTP receivers", str),
    Setting("tls_key", "", "PEM private key for --tls-cert", str),
    Setting(
        "tls_client_ca", "", "PEM CA bundle; when set, clients must present a certificate", str
    ),
)


def parse_object_store(text: str) -> str:
    """'' (off) or an `s3://bucket[/prefix]` location, normalized."""
    if not str(text).strip():
        return ""
    # Imported here: the URL rules live with the shipper; config stays import-light.
    from collector.store.objectstore import StoreUrl

    return str(StoreUrl.parse(text))


# Scale-out: ship finished Parquet files to S3-compatible object storage (collector/store/
# objectstore.py). Readers take the endpoint and region from the same environment variables.
OBJECT_STORE: Final = (
    Setting(
        "object_store",
        "",
        "ship finished Parquet files to s3://bucket/prefix ('' = off)",
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
