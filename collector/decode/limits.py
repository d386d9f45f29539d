"""Limits the decoders apply to what one client sends: attribute counts and value lengths (after
the OpenTelemetry SDK's attribute limits) and the timestamp window of live ingest.

Why at decode: one request's resource with 100,000 attributes, repeated on every span, took a
decode worker past 1 GB; one request with spans spread over 2,000 future hours created 2,000
partitions. The settings are declared in `meshlens.settings` (DECODE); decode workers are
spawned processes, so they read them from the environment (`MESHLENS_*`), which `serve`
exports from its flags (`export_to_environ`). Pure, apart from reading/writing the environment
and the process-local drop counters (`counts`), which the decoders also log.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Final

NS_PER_S: Final = 1_000_000_000
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """0 means no limit. Counts are per attribute set (a span's, a resource's, ...)."""

    attribute_count: int = 128  # OTEL_ATTRIBUTE_COUNT_LIMIT: metric data points
    attribute_value_length: int = 0  # OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT (characters of text)
    resource_attribute_count: int = 128
    span_attribute_count: int = 128  # OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT
    log_record_attribute_count: int = 128  # OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT
    max_future_s: float = 3600.0  # timestamps later than receipt + this are clamped to receipt
    max_age_s: float = 0.0  # rows older than receipt - this are dropped (0: kept, any age)

    def window_ns(self, received_ns: int) -> tuple[int, int]:
        """(oldest kept, latest kept) timestamps for a record received at `received_ns`
        (0 and 2**64-1 when unbounded, or when the receipt time is unknown)."""
        if received_ns <= 0:
            return 0, 2**64 - 1
        lo = max(received_ns - int(self.max_age_s * NS_PER_S), 0) if self.max_age_s > 0 else 0
        hi = received_ns + int(self.max_future_s * NS_PER_S) if self.max_future_s > 0 else 2**64 - 1
        return lo, min(hi, 2**64 - 1)


DEFAULT: Final = DecodeLimits()
# setting name (meshlens.settings.DECODE) -> DecodeLimits field
FIELDS: Final[dict[str, str]] = {
    "attribute_count_limit": "attribute_count",
    "attribute_value_length_limit": "attribute_value_length",
    "resource_attribute_count_limit": "resource_attribute_count",
    "span_attribute_count_limit": "span_attribute_count",
    "log_record_attribute_count_limit": "log_record_attribute_count",
    "ingest_max_future": "max_future_s",
    "ingest_max_age": "max_age_s",
}


def from_values(values: Mapping[str, Any]) -> DecodeLimits:
    """Limits from setting values by setting name (missing ones keep their defaults)."""
    given = {field: values[name] for name, field in FIELDS.items() if name in values}
    return DecodeLimits(**given)


def from_environ(environ: Mapping[str, str] | None = None) -> DecodeLimits:
    from meshlens.settings import DECODE  # config imports nothing of ours; keep decode light

    env = os.environ if environ is None else environ
    return from_values({s.name: s.resolve(env) for s in DECODE})


def export_to_environ(values: Mapping[str, Any], environ: MutableMapping[str, str]) -> None:
    """Write the decode settings' values (e.g. from flags) where spawned decode workers read
    them; every value is written as a bare number, which each setting's parser accepts."""
    from meshlens.settings import DECODE

    for s in DECODE:
        if s.name in values:
            environ[s.env] = repr(values[s.name])


_current: list[DecodeLimits] = []


def current() -> DecodeLimits:
    """This process's limits (read from the environment once)."""
    if not _current:
        _current.append(from_environ())
    return _current[0]


def set_current(limits: DecodeLimits | None) -> None:
    """Override (tests), or forget (None: read the environment again on next use)."""
    _current.clear()
    if limits is not None:
        _current.append(limits)


_lock = threading.Lock()
_counts: dict[str, int] = {"attributes_dropped": 0, "timestamps_clamped": 0, "rows_too_old": 0}


def count(what: str, n: int) -> None:
    if n:
        with _lock:
            _counts[what] += n


def dropped_attributes(kind: str, n: int) -> None:
    """Count (and log) attributes one request lost to the count limits."""
    if n:
        count("attributes_dropped", n)
        log.warning("%s: %d attributes over the attribute count limits dropped", kind, n)


def counts() -> dict[str, int]:
    """attributes_dropped, timestamps_clamped, rows_too_old decoded so far in this process."""
    with _lock:
        return dict(_counts)
