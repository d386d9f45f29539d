"""Istio/Envoy access-log lines (text and JSON) -> `requests` rows.

Istio's default text format (istio pilot/pkg/model/telemetry_logging.go `EnvoyTextLogFormat`):

    [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
    %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
    "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
    %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
    "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW%
    %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%
    %REQUESTED_SERVER_NAME% %ROUTE_NAME%

(one line). Fields are positional; the parser is tolerant of older Istio versions (no details
fields, `"%DYNAMIC_METADATA(istio.mixer:status)%"`) and of Envoy's own default format (which
stops after `"%UPSTREAM_HOST%"`). Istio's JSON format (`EnvoyJSONLogFormatIstio`) uses the keys
start_time, method, path, protocol, response_code, ... upstream_cluster, requested_server_name.

A JSON `accessLogFormat` under TEXT encoding (a format string with newlines in it) makes
Envoy print one JSON object over many lines; `read_entries` puts those lines back together
(tracking JSON nesting outside strings) before parsing. `kubectl logs` prefixes are stripped
from every line: `--prefix` ("[pod/<pod>/<container>] ", kubectl pkg/cmd/logs/logs.go) and
`--timestamps` (the kubelet's RFC 3339 time and a space), and a node's CRI log file prefix
("<time> stdout F "; "P" lines continue on the next one). Every entry that is not imported
comes back as a `Rejected` with its line numbers and the reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import pyarrow as pa

from meshlens.collector.decode import identity
from meshlens.collector.decode.identity import Observation, Workload
from meshlens.collector.decode.request_rows import rows_to_table
from meshlens.collector.store import grpc_status as grpc_status_codes
from meshlens.collector.store.records import Record
from meshlens.collector.store.schema import UNKNOWN

_TEXT_RE: Final = re.compile(
    r'^\[(?P<start>[^\]]+)\] "(?P<method>\S+) (?P<path>.*?) (?P<protocol>\S+)" '
    r"(?P<code>\d+|-) (?P<flags>\S+) "
    r"(?:(?P<middle>.*?) )?"
    r"(?P<rx>\d+|-) (?P<tx>\d+|-) (?P<dur>\d+|-) (?P<ust>\S+) "
    r'"(?P<xff>[^"]*)" "(?P<ua>.*?)" "(?P<rid>[^"]*)" "(?P<authority>[^"]*)" '
    r'"(?P<uhost>[^"]*)"'
    r"(?: (?P<cluster>\S+) (?P<ulocal>\S+) (?P<dlocal>\S+) (?P<dremote>\S+)"
    r"(?: (?P<sni>\S+))?(?: (?P<route>\S+))?)?"
    r"\s*$"
)
_MIDDLE_TOKEN_RE: Final = re.compile(r'"[^"]*"|\S+')
# `kubectl logs --prefix` ("[pod/name/container] "), then `--timestamps` ("2024-...Z ") or a
# CRI log file's "<time> <stream> <tag> " (tag P: a partial line, continued on the next one).
# One space each (kubectl and the kubelet write exactly that), so istio-agent's own lines
# ("<time>\tinfo\t...") keep their time.
_K8S_PREFIX_RE: Final = re.compile(
    r"^(?:\[pod/[^\]]*\] )?"
    r"(?:\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-][\d:]+)(?: (?:stdout|stderr) (?P<tag>[FP])(?::\S*)?)? )?"
)
_JSON_KEYS: Final = frozenset(
    ("start_time", "response_code", "upstream_cluster", "response_flags", "authority", "method")
)


def strip_k8s_prefix(line: str) -> str:
    return _K8S_PREFIX_RE.sub("", line, count=1)


def _split_k8s_prefix(line: str) -> tuple[str, bool]:
    """(the line without kubectl/CRI prefixes, whether it is a CRI partial line)."""
    m = _K8S_PREFIX_RE.match(line)
    if m is None or not m.end():
        return line, False
    return line[m.end() :], m.group("tag") == "P"


def _dash(value: Any) -> str:
    """'' for Envoy's '-' (no value) and None."""
    if value is None:
        return ""
    text = str(value)
    return "" if text == "-" else text


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


_INT64_MAX = 2**63 - 1


class _OutOfRange(ValueError):
    """A numeric field no real proxy writes (e.g. '1E309' bytes, a 20-digit code): the line
    is rejected as malformed rather than stored with a made-up value."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__(f"{name} {text[:40]!r} is out of range")


def _int(value: Any, limit: int = _INT64_MAX, name: str = "number") -> int | None:
    """A number from a log field; None when absent or not a number; _OutOfRange outside
    [-limit, limit]."""
    text = _dash(value)
    if not text:
        return None
    try:
        number = int(text) if text.lstrip("-").isdigit() else int(float(text))
    except ValueError:
        return None
    except OverflowError:
        raise _OutOfRange(name, text) from None
    if not -limit <= number <= limit:
        raise _OutOfRange(name, text)
    return number


def _ts_us(value: Any) -> int | None:
    text = _dash(value).strip()
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


def _addr_port(addr: str) -> int | None:
    host, sep, port = addr.rpartition(":")
    return int(port) if sep and host and port.isdigit() else None


def parse_text_fields(line: str) -> dict[str, Any] | None:
    """A text line -> the Istio JSON-format field dict (None when it is not an access log)."""
    m = _TEXT_RE.match(line)
    if m is None:
        return None
    g = m.groupdict()
    middle = [t for t in _MIDDLE_TOKEN_RE.findall(g["middle"] or "")]
    bare = [t for t in middle if not t.startswith('"')]
    quoted = [t[1:-1] for t in middle if t.startswith('"')]
    return {
        "start_time": g["start"],
        "method": g["method"],
        "path": g["path"],
        "protocol": g["protocol"],
        "response_code": g["code"],
        "response_flags": g["flags"],
        "response_code_details": bare[0] if bare else None,
        "connection_termination_details": bare[1] if len(bare) > 1 else None,
        "upstream_transport_failure_reason": quoted[-1] if quoted else None,
        "bytes_received": g["rx"],
        "bytes_sent": g["tx"],
        "duration": g["dur"],
        "upstream_service_time": g["ust"],
        "x_forwarded_for": g["xff"],
        "user_agent": g["ua"],
        "request_id": g["rid"],
        "authority": g["authority"],
        "upstream_host": g["uhost"],
        "upstream_cluster": g["cluster"],
        "upstream_local_address": g["ulocal"],
        "downstream_local_address": g["dlocal"],
        "downstream_remote_address": g["dremote"],
        "requested_server_name": g["sni"],
        "route_name": g["route"],
    }


# Envoy writes "-" for a value it does not have; a JSON template with an unquoted operator
# (`"duration": %DURATION%`) then prints `"response_duration": -`, which is not JSON.
_BARE_DASH_RE: Final = re.compile(r'"(?:[^"\\]|\\.)*"|(:\s*)-(?=\s*[,}\]])')


def _bare_dash_to_null(m: re.Match[str]) -> str:
    return m.group(0) if m.group(1) is None else m.group(1) + "null"


def _load_json(text: str) -> Any:
    """json.loads, and once more with Envoy's bare "-" values read as null; raises the first
    attempt's ValueError when both fail."""
    try:
        return json.loads(text)
    except ValueError as exc:
        fixed = _BARE_DASH_RE.sub(_bare_dash_to_null, text)
        if fixed == text:
            raise
        try:
            return json.loads(fixed)
        except ValueError:
            raise exc from None


def parse_json_fields(line: str) -> dict[str, Any] | None:
    try:
        obj = _load_json(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or not (_JSON_KEYS & obj.keys()):
        return None
    return obj


_ABSENT: Final = object()
_IDENTITY_CACHE: dict[tuple[Any, ...], tuple[dict[str, Any], identity.ClusterName]] = {}
_IDENTITY_CACHE_MAX: Final = 8192


def _resolve(key: tuple[Any, ...]) -> tuple[dict[str, Any], identity.ClusterName]:
    """Identity of a log line from its identity facts (the cache key of `fields_to_row`)."""
    (
        cluster_raw,
        local,
        authority,
        host,
        reached,
        sni,
        down_peer_in,
        down_local_in,
        up_peer_in,
        up_local,
        up_mx,
        down_mx,
    ) = key
    cluster = identity.parse_upstream_cluster(cluster_raw)
    has_tls_fields = down_peer_in is not _ABSENT or down_local_in is not _ABSENT
    down_peer = "" if down_peer_in is _ABSENT else _dash(down_peer_in)
    down_local = "" if down_local_in is _ABSENT else _dash(down_local_in)
    up_peer = "" if up_peer_in is _ABSENT else _dash(up_peer_in)
    # A client-side request that never reached an upstream host has no connection to judge.
    has_up_fields = up_peer_in is not _ABSENT and reached
    obs = Observation(
        cluster=cluster,
        local=local,
        authority=authority,
        local_principal=identity.known(down_local),
        peer_principal=identity.known(down_peer),
        tls_local_cert=bool(down_local) if has_tls_fields else None,
        tls_peer_cert=bool(down_peer) if has_tls_fields else None,
        sni=sni,
        upstream_host=host.rsplit(":", 1)[0],
        upstream_peer=identity.peer_from_header(up_mx),
        downstream_peer=identity.peer_from_header(down_mx),
        upstream_peer_principal=identity.known(up_peer),
        upstream_tls=bool(up_peer and up_local) if has_up_fields else None,
    )
    return identity.resolve(obs), cluster


def fields_to_row(
    f: Mapping[str, Any],
    *,
    local: Workload = identity.UNKNOWN_WORKLOAD,
    node_id: str = "",
    origin: str = "file",
    default_ts_us: int | None = None,
) -> dict[str, Any] | None:
    """Istio JSON-format fields (also what the text parser yields) -> a requests row.
    Optional extra keys (our local mesh's OTel attributes, custom formats): downstream_peer_uri_san,
    downstream_local_uri_san, upstream_peer_uri_san, upstream_local_uri_san, traceparent,
    trace_id, grpc_status, content_type, and upstream_peer / downstream_peer (Istio's
    x-envoy-peer-metadata value, e.g. from %RESP(X-ENVOY-PEER-METADATA)%)."""
    ts = _ts_us(f.get("start_time"))
    if ts is None:
        ts = default_ts_us
    if ts is None:
        return None
    get = f.get
    cluster_raw = _dash(get("upstream_cluster"))
    protocol_text = _dash(get("protocol"))
    method = _dash(get("method"))
    is_tcp = not method and (not protocol_text or protocol_text.lower() == "tcp")
    authority = _dash(get("authority"))
    upstream_host = _dash(get("upstream_host"))
    key = (
        cluster_raw,
        local,
        authority,
        upstream_host or _dash(get("downstream_local_address")),
        bool(upstream_host),
        _dash(get("requested_server_name")),
        get("downstream_peer_uri_san", _ABSENT),
        get("downstream_local_uri_san", _ABSENT),
        get("upstream_peer_uri_san", _ABSENT),
        _dash(get("upstream_local_uri_san")),
        _text_or_none(get("upstream_peer")),
        _text_or_none(get("downstream_peer")),
    )
    cached = _IDENTITY_CACHE.get(key)
    if cached is None:
        cached = _resolve(key)
        if len(_IDENTITY_CACHE) >= _IDENTITY_CACHE_MAX:
            _IDENTITY_CACHE.clear()
        _IDENTITY_CACHE[key] = cached
    ident, cluster = cached
    row = dict(ident)
    # %GRPC_STATUS% prints names ("OK", "Unavailable") or numbers by Envoy version and format.
    grpc_status = grpc_status_codes.normalize(_dash(f.get("grpc_status")))
    content_type = _dash(f.get("content_type"))
    if is_tcp:
        protocol = "tcp"
    elif grpc_status or content_type.startswith("application/grpc"):
        protocol = "grpc"
    else:
        protocol = "http"
    trace_id = _dash(f.get("trace_id"))
    tp = _dash(f.get("traceparent")).split("-")
    if not trace_id and len(tp) >= 4 and len(tp[1]) == 32:
        trace_id = tp[1]
    dlocal = _dash(f.get("downstream_local_address"))
    duration = _int(f.get("duration"), name="duration")
    row.update(
        ts=ts,
        duration_ms=float(duration) if duration is not None else None,
        protocol=protocol,
        method=method or None,
        path=_dash(f.get("path")) or None,
        authority=authority or None,
        response_code=_int(f.get("response_code"), 999, "response_code") or 0,  # 3 digits
        grpc_status=grpc_status,
        response_flags=_dash(f.get("response_flags")) or "-",
        request_bytes=_int(f.get("bytes_received"), name="bytes_received"),
        response_bytes=_int(f.get("bytes_sent"), name="bytes_sent"),
        upstream_cluster=cluster.raw or UNKNOWN,
        request_id=_dash(f.get("request_id")),
        trace_id=trace_id.lower(),
        node_id=node_id,
        origin=origin,
        user_agent=_dash(f.get("user_agent")) or None,
        destination_port=cluster.port if cluster.port is not None else _addr_port(dlocal),
        source_address=_dash(f.get("downstream_remote_address")).rsplit(":", 1)[0] or None,
        connection_termination_details=_dash(f.get("connection_termination_details")) or None,
        response_code_details=_dash(f.get("response_code_details")) or None,
    )
    return row


def parse_fields(line: str) -> dict[str, Any] | None:
    """Text or JSON line (k8s prefixes stripped) -> field dict, None when not an access log."""
    text = strip_k8s_prefix(line.strip())
    if text.startswith("{"):
        return parse_json_fields(text)
    if text.startswith("["):
        return parse_text_fields(text)
    return None


def parse_access_log_line(
    line: str,
    *,
    local: Workload = identity.UNKNOWN_WORKLOAD,
    node_id: str = "",
    origin: str = "file",
) -> dict[str, Any] | None:
    """One access-log line (Istio text or JSON format) -> a requests row, None if it is not
    one (other log lines, malformed lines)."""
    fields = parse_fields(line)
    if fields is None:
        return None
    try:
        return fields_to_row(fields, local=local, node_id=node_id, origin=origin)
    except _OutOfRange:
        return None


# ---- a stream of lines -> entries -> rows, with a reason for everything not imported ------

MAX_ENTRY_LINES: Final = 1000  # a JSON entry not closed within this many lines is broken
_EXCERPT: Final = 100


@dataclass(frozen=True, slots=True)
class Entry:
    """One access-log candidate: a physical line, or the lines of one JSON object spread over
    several (kubectl and CRI prefixes removed, joined by newlines)."""

    first: int  # line numbers, 1-based, inclusive
    last: int
    text: str
    lines: int = 1  # non-blank physical lines in it
    broken: str = ""  # why the lines do not make a whole entry ("" when they do)
    value: Any = None  # the parsed JSON, when reading the entries parsed it already


@dataclass(frozen=True, slots=True)
class Rejected:
    """Lines that were not imported, and why."""

    first: int
    last: int
    lines: int  # non-blank physical lines
    reason: str
    excerpt: str  # the line at fault, else the first with more than a brace on it

    @property
    def where(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"


_TOKEN_RE: Final = re.compile(r'"(?:[^"\\\n]|\\.)*"?|[{}\[\]:,]|[^\s"{}\[\]:,]+')
# Lines that cannot continue a JSON object: a text access-log line, Envoy's and istio-agent's
# own log lines (stderr, interleaved with the access log on stdout by the container runtime).
_STANDALONE_RE: Final = re.compile(r"\[\d{4}-\d\d-\d\d[T ]|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S*\s")


class _JsonLines:
    """The lines of one JSON object being put together, and where its parser would be."""

    __slots__ = ("first", "last", "nonblank", "parts", "stack", "state")

    def __init__(self, lineno: int) -> None:
        self.first = self.last = lineno
        self.nonblank = 0
        self.parts: list[str] = []
        self.stack: list[str] = []
        self.state = "value"  # what comes next: "value", "key", or "after" (a value)

    def wants_value(self) -> bool:
        return self.state == "value"

    def feed(self, lineno: int, text: str) -> int | None:
        """Take one line; the offset just past the object's closing brace if it ends on this
        line, else None."""
        self.last = lineno
        self.nonblank += 1 if text.strip() else 0
        stack = self.stack
        for m in _TOKEN_RE.finditer(text):
            token = m.group()
            c = token[0]
            if c == "{" or c == "[":
                stack.append(c)
                self.state = "key" if c == "{" else "value"
            elif c == "}" or c == "]":
                if stack:
                    stack.pop()
                self.state = "after"
                if not stack:
                    self.parts.append(text[: m.end()])
                    return m.end()
            elif c == ":":
                self.state = "value"
            elif c == ",":
                self.state = "key" if stack and stack[-1] == "{" else "value"
            else:
                self.state = "after"
        self.parts.append(text)
        return None

    def entry(self, broken: str = "") -> Entry:
        return Entry(self.first, self.last, "\n".join(self.parts), max(self.nonblank, 1), broken)


def _whole_json(text: str) -> Any:
    """The JSON value `text` holds, None when it is not one whole JSON value."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def read_entries(
    lines: Iterable[tuple[int, str]], *, max_lines: int = MAX_ENTRY_LINES
) -> Iterator[Entry]:
    """Numbered physical lines -> access-log candidates, in order of their first line (a
    standalone line met inside a multi-line JSON object comes out before it).

    A line starting with "{" that is not a whole JSON object opens one that takes the next
    lines until its braces close (counted outside strings). It is given up as `broken`, and the
    lines after it read afresh, when a line could not continue it: a new "{" where no value
    can start, a text access-log or Envoy/istio-agent log line (these come out on their own),
    `max_lines` lines without the closing brace, or the end of the input.
    """
    open_: _JsonLines | None = None
    partial = ""  # a CRI partial line ("P") waiting for the rest
    partial_from = 0
    for lineno, raw in lines:
        text, is_partial = _split_k8s_prefix(raw.rstrip("\r\n"))
        if partial:
            text, lineno_first = partial + text, partial_from
        else:
            lineno_first = lineno
        if is_partial:
            partial, partial_from = text, lineno_first
            continue
        partial = ""
        while True:  # a line may close one JSON object and open the next
            if open_ is not None:
                head = text.lstrip()
                if _STANDALONE_RE.match(head):
                    yield Entry(lineno_first, lineno, text)
                    break
                if head.startswith("{") and not open_.wants_value():
                    whole = _whole_json(text)
                    if whole is not None:  # e.g. istio-agent's JSON log line: on its own
                        yield Entry(lineno_first, lineno, text, value=whole)
                        break
                    yield open_.entry(
                        f"JSON object not closed before line {lineno_first} starts another"
                    )
                    open_ = None
                    continue
                end = open_.feed(lineno, text)
                if end is None:
                    if open_.last - open_.first + 1 >= max_lines:
                        yield open_.entry(f"JSON object not closed within {max_lines} lines")
                        open_ = None
                    break
                yield open_.entry()
                open_ = None
                text = text[end:]
                if not text.strip():
                    break
                lineno_first = lineno
                continue
            head = text.lstrip()
            if not head:
                break
            if head[0] == "{":
                value = _whole_json(text)
                if value is not None:
                    yield Entry(lineno_first, lineno, text, value=value)
                    break
                open_ = _JsonLines(lineno_first)
                continue
            yield Entry(lineno_first, lineno, text)
            break
    if partial:
        yield Entry(partial_from, partial_from, partial)
    if open_ is not None:
        yield open_.entry("the input ended before the JSON object was closed")


def _excerpt(text: str, line: int | None = None) -> str:
    """Line `line` (0-based) of `text`, else its first line with more than a brace on it."""
    lines = text.strip().split("\n")
    if line is not None and 0 <= line < len(lines):
        shown = lines[line].strip()
    else:
        shown = next((ln.strip() for ln in lines if len(ln.strip()) > 1), lines[0].strip())
    return shown if len(shown) <= _EXCERPT else shown[: _EXCERPT - 3] + "..."


_TEXT_START_RE: Final = re.compile(r'\[([^\]]*)\] "')


def _text_reason(text: str) -> str:
    """Why a line starting with "[" is not a text access log."""
    m = _TEXT_START_RE.match(text)
    if m is None:
        return "not an access-log line"
    if _ts_us(m.group(1)) is None:
        return f"start time {m.group(1)[:40]!r} is not an RFC 3339 time"
    return "not in Istio's or Envoy's text access-log format (fields missing or out of order)"


def parse_entry(
    entry: Entry,
    *,
    local: Workload = identity.UNKNOWN_WORKLOAD,
    node_id: str = "",
    origin: str = "file",
) -> dict[str, Any] | Rejected:
    """An entry -> a requests row, or Rejected saying why not."""

    def rejected(reason: str, line: int | None = None) -> Rejected:
        excerpt = _excerpt(entry.text, line)
        return Rejected(entry.first, entry.last, entry.lines, reason, excerpt)

    if entry.broken:
        return rejected(entry.broken)
    value = entry.value
    text = entry.text.strip() if value is None else "{"
    fields: dict[str, Any] | None
    if text.startswith("{"):
        if value is None:
            try:
                value = _load_json(text)
            except json.JSONDecodeError as exc:
                at = f"line {entry.first + exc.lineno - 1} column {exc.colno}"
                return rejected(f"invalid JSON at {at}: {exc.msg}", exc.lineno - 1)
            except (ValueError, RecursionError) as exc:
                return rejected(f"invalid JSON: {str(exc)[:80]}")
        if not isinstance(value, dict):
            return rejected("JSON that is not an object")
        if not (_JSON_KEYS & value.keys()):
            return rejected(
                "JSON object without access-log fields (start_time, method, response_code, "
                "upstream_cluster, ...)"
            )
        fields = value
    elif text.startswith("["):
        fields = parse_text_fields(text)
        if fields is None:
            return rejected(_text_reason(text))
    else:
        return rejected("not an access-log line")
    try:
        row = fields_to_row(fields, local=local, node_id=node_id, origin=origin)
    except _OutOfRange as exc:
        return rejected(str(exc))
    if row is None:
        start = fields.get("start_time")
        if start is None:
            return rejected("no start_time field")
        return rejected(f"start_time {str(start)[:40]!r} is not an RFC 3339 time")
    return row


def parse_lines(
    lines: Iterable[tuple[int, str]],
    *,
    local: Workload = identity.UNKNOWN_WORKLOAD,
    node_id: str = "",
    origin: str = "file",
) -> Iterator[dict[str, Any] | Rejected]:
    """Numbered lines of an access log (as `kubectl logs` prints it, or a file) -> requests
    rows and Rejected entries (line numbers and reason), in order."""
    for entry in read_entries(lines):
        yield parse_entry(entry, local=local, node_id=node_id, origin=origin)


def decode_lines_record(record: Record) -> dict[str, pa.Table]:
    """A record of access-log lines (UTF-8, one per line; context = source name). Entries
    that are not access logs are skipped (the importer counts and reports them)."""
    text = record.payload.decode("utf-8", errors="replace")
    rows = [r for r in parse_lines(enumerate(text.split("\n"), 1)) if isinstance(r, dict)]
    return {"requests": rows_to_table(rows)}
