"""Conformance: real Istio/Envoy access-log output -> `requests` rows with the documented fields.

The files in `upstream/` are data taken from public sources (log lines and captures exactly as
printed, the format strings and example values shown with them; see SOURCES.md for each file's
repository, path, commit and line range). Nothing here is typed in from memory: every expected
value is read from the same source that shows the log line (istio.io's table of operator values,
the JSON objects of the blog's captures), or is quoted from the issue/PR that shows the line.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshlens.cli import main
from meshlens.collector.decode.access_log_text import Rejected, parse_access_log_line, parse_lines
from tests.collector.receivers.rows import query

UPSTREAM = Path(__file__).parent / "upstream"


def _read(name: str) -> str:
    return (UPSTREAM / name).read_text(encoding="utf-8")


def _ts_us(text: str) -> int:
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


def _rows(lines: list[str]) -> tuple[list[dict[str, Any]], list[Rejected]]:
    out = list(parse_lines(enumerate(lines, 1)))
    return [r for r in out if isinstance(r, dict)], [r for r in out if isinstance(r, Rejected)]


# ---- istio.io "Envoy Access Logs" task: the default TEXT format -------------------------------

_TASK = json.loads(_read("istio-access-log-task.json"))


def _task_format() -> str:
    """The default format the page shows (istio-access-log-task.json, page L81-83)."""
    fmt: str = _TASK["default_format"]["format"]
    return fmt


def _task_table() -> dict[str, tuple[str, str]]:
    """operator -> (value in sleep's log, value in httpbin's log), as the table gives them."""
    assert _TASK["example_values"]["columns"] == ["operator", "sleep", "httpbin"]
    return {op: (sleep, httpbin) for op, sleep, httpbin in _TASK["example_values"]["rows"]}


def _task_logs() -> dict[str, str]:
    """app -> the line `kubectl logs -l app=<app> -c istio-proxy` printed."""
    text = _read("istio-access-log-task.lines.txt")
    return dict(re.findall(r"^\$ kubectl logs -l app=(\w+) -c istio-proxy\n(.+)$", text, re.M))


def test_the_task_documents_one_line_per_proxy_and_a_value_per_operator() -> None:
    table = _task_table()
    assert len(table) == 22 and set(_task_logs()) == {"sleep", "httpbin"}
    # The table's values put into the documented format give exactly the documented lines.
    for column, app in enumerate(("sleep", "httpbin")):
        rendered = _task_format()
        for op, values in table.items():
            rendered = rendered.replace(op, values[column])
        assert rendered == _task_logs()[app]


@pytest.mark.parametrize(
    ("column", "app", "reporter"), [(0, "sleep", "source"), (1, "httpbin", "destination")]
)
def test_istio_default_text_line_gives_the_documented_fields(
    column: int, app: str, reporter: str
) -> None:
    values = {op: v[column] for op, v in _task_table().items()}
    row = parse_access_log_line(_task_logs()[app])
    assert row is not None
    method, path, protocol = (
        values['"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"'].strip('"').split()
    )
    assert (row["method"], row["path"], row["protocol"]) == (method, path, "http")
    assert protocol == "HTTP/1.1"
    assert row["ts"] == _ts_us(values["[%START_TIME%]"].strip("[]"))
    assert row["response_code"] == int(values["%RESPONSE_CODE%"])
    assert row["response_flags"] == values["%RESPONSE_FLAGS%"]
    assert row["response_code_details"] == values["%RESPONSE_CODE_DETAILS%"]
    assert row["request_bytes"] == int(values["%BYTES_RECEIVED%"])
    assert row["response_bytes"] == int(values["%BYTES_SENT%"])
    assert row["duration_ms"] == float(values["%DURATION%"])
    assert row["upstream_cluster"] == values["%UPSTREAM_CLUSTER%"]
    assert row["authority"] == values['"%REQ(:AUTHORITY)%"'].strip('"')
    assert row["request_id"] == values['"%REQ(X-REQUEST-ID)%"'].strip('"')
    assert row["user_agent"] == values['"%REQ(USER-AGENT)%"'].strip('"')
    assert row["source_address"] == values["%DOWNSTREAM_REMOTE_ADDRESS%"].rsplit(":", 1)[0]
    # outbound|8000||httpbin.foo... on the client, inbound|8000|| (+ SNI) on the server
    assert row["reporter"] == reporter
    assert row["destination_service"] == "httpbin.foo.svc.cluster.local"
    assert row["destination_port"] == 8000  # the port in the cluster name, both sides


# ---- Istio PRs: lines with other response flags and details -----------------------------------


def test_istio_pr_27903_lines() -> None:
    """istio/istio#27903 shows what RESPONSE_CODE_DETAILS adds: an upstream response, a TCP
    connection no filter chain took (NR), an HTTP/1 codec error (DPE), an RBAC denial."""
    rows, rejected = _rows(_read("istio-pr-27903-example-logs.txt").splitlines())
    assert rejected == []
    got = [
        (r["protocol"], r["method"], r["path"], r["response_code"], r["response_flags"])
        for r in rows
    ]
    assert got == [
        ("http", "GET", "/headers", 200, "-"),
        ("tcp", None, None, 0, "NR"),
        ("http", None, None, 400, "DPE"),
        ("http", "GET", "/headers", 403, "-"),
    ]
    assert [r["response_code_details"] for r in rows] == [
        "via_upstream",
        "filter_chain_not_found",
        "http1.codec_error",
        "rbac_access_denied_matched_policy[none]",
    ]
    assert rows[0]["upstream_cluster"] == "inbound|8000||"
    assert rows[0]["reporter"] == "destination"
    assert rows[0]["request_id"] == "24e58e43-e576-9048-829b-02e3f3da16f0"
    assert rows[3]["request_id"] == "07541777-6ee2-908f-a78b-867fe257ac80"
    assert [r["upstream_cluster"] for r in rows[1:]] == ["unknown"] * 3  # "-": no cluster
    assert [r["destination_port"] for r in rows] == [8000, 80, 80, 80]


def test_istio_pr_8901_sample_in_envoy_default_format() -> None:
    """istio/istio#8901's sample before Istio added its fields: Envoy's default format, with a
    two-hop X-Forwarded-For."""
    (line,) = _read("istio-pr-8901-sample.txt").splitlines()
    row = parse_access_log_line(line)
    assert row is not None
    assert (row["method"], row["path"], row["response_code"]) == ("GET", "/headers", 200)
    assert (row["request_bytes"], row["response_bytes"], row["duration_ms"]) == (0, 539, 14.0)
    assert row["request_id"] == "dd33e3aa-0a60-9d87-8c6e-795898629907"
    assert row["authority"] == "istio-consul.us-south.containers.appdomain.cloud"
    assert row["upstream_cluster"] == "unknown"  # the format had no %UPSTREAM_CLUSTER% yet


def test_envoy_default_format_line_from_envoys_tutorial_with_crlf() -> None:
    """Envoy's own tutorial shows the default format's output; the page has CRLF line ends, and
    so has the line kept from it."""
    raw = (UPSTREAM / "katacoda-envoy-step6.lines.txt").read_bytes()
    assert raw.endswith(b"\r\n")
    (line,) = raw.decode().split("\n")[:-1]
    rows, rejected = _rows([line.strip()])
    assert rejected == []
    (row,) = rows
    assert (row["method"], row["path"], row["response_code"], row["duration_ms"]) == (
        "GET",
        "/",
        200,
        4.0,
    )
    assert row["request_id"] == "f21ebd42-6770-4aa5-88d4-e56118165a7d"
    assert row["authority"] == "one.example.com"


# ---- a JSON accessLogFormat under TEXT encoding: one entry over many lines --------------------

_MESH = yaml.safe_load(
    yaml.safe_load(_read("istio-sidecar-proxy-access-log.mesh-config.yaml"))["data"]["mesh"]
)


def _mesh_config_format() -> str:
    fmt: str = _MESH["accessLogFormat"]
    return fmt.rstrip("\n")


def _captures() -> list[tuple[str, list[str]]]:
    """(caption, the lines `kubectl logs` showed) of every access-log capture in the post."""
    captures: list[tuple[str, list[str]]] = []
    for line in _read("istio-sidecar-proxy-access-log.captures.txt").splitlines():
        if line.startswith("### "):
            captures.append((line[4:].rsplit(" @ ", 1)[0], []))
        elif captures:
            captures[-1][1].append(line)
        else:
            assert line.startswith("# "), line  # the file's header
    return captures


def _objects(lines: list[str]) -> list[Any]:
    """The JSON objects in a capture, or None for one that is not valid JSON."""
    out: list[Any] = []
    text = "\n".join(lines)
    for chunk in re.split(r"(?<=\n\})\n(?=\{\n)", text):
        try:
            out.append(json.loads(chunk))
        except ValueError:
            out.append(None)
    return out


def test_the_captures_are_the_mesh_configs_format() -> None:
    fmt = _mesh_config_format()
    assert _MESH["accessLogEncoding"] == "TEXT"  # the format's newlines reach the output
    keys = re.findall(r'^  "(\w+)": "%[^"]+%",?$', fmt, re.M)
    assert fmt.startswith("{\n") and fmt.endswith("\n}") and len(keys) == 28
    objects = [o for _, lines in _captures() for o in _objects(lines)]
    assert len(objects) == 92
    assert all(list(o) == keys for o in objects if o is not None)
    assert objects.count(None) == 1  # [Text 11]: a stray character after a value, see below


def _stream(prefix: str = "") -> tuple[list[str], dict[int, tuple[str, Any]]]:
    """All captures as one `kubectl logs` stream, and what each entry's first line holds."""
    lines: list[str] = []
    starts: dict[int, tuple[str, Any]] = {}
    for caption, capture in _captures():
        chunk_start = len(lines) + 1
        objects = iter(_objects(capture))
        for i, line in enumerate(capture):
            if line == "{":
                starts[chunk_start + i] = (caption, next(objects))
        lines += capture
    return [prefix + line for line in lines], starts


def _kubectl_prefix() -> str:
    """What `kubectl logs --prefix` puts before every line: kubernetes/kubectl
    pkg/cmd/logs/logs.go at dee3483a3d6a64c07fdf746caf80af446dee99ac, `addPrefixIfNeeded`
    (L467-486) formats it (L481, the format kept in kubectl-logs-prefix.json) and the
    `prefixingWriter` (L519-539) prepends it to every write (L531), while
    `DefaultConsumeRequest` (L496-517) writes the stream one line at a time (`ReadBytes('\\n')`,
    L505)."""
    fmt: str = json.loads(_read("kubectl-logs-prefix.json"))["format"]
    return fmt.replace("%s", "shell", 1).replace("%s", "istio-proxy", 1)


# The kubelet's --timestamps format is RFC3339NanoFixed plus one space (see SOURCES.md).
_TS = "2025-12-14T15:04:12.558123456Z "


@pytest.mark.parametrize(
    "prefix",
    ["", _TS, "<kubectl>", "<kubectl>" + _TS, _TS.replace("Z ", "Z stdout F ")],
    ids=["plain", "timestamps", "prefix", "prefix+timestamps", "cri-file"],
)
def test_multi_line_entries_give_the_fields_of_each_object(prefix: str) -> None:
    prefix = prefix.replace("<kubectl>", _kubectl_prefix())
    lines, starts = _stream(prefix)
    items = list(parse_lines(enumerate(lines, 1)))
    rows = [i for i in items if isinstance(i, dict)]
    (bad,) = [i for i in items if isinstance(i, Rejected)]
    assert len(rows) == 91
    # The one capture that is not JSON: reported with its lines and why, nothing else lost.
    caption, obj = starts[bad.first]
    assert obj is None and caption.startswith("[Text 11] Upstream TCP RST after Response")
    assert bad.last - bad.first == 29 and bad.lines == 30
    assert bad.reason == f"invalid JSON at line {bad.first + 27} column 26: Expecting ',' delimiter"
    assert bad.excerpt == '"request_duration": "0"한'
    good = [(caption, obj) for first, (caption, obj) in sorted(starts.items()) if obj]
    assert len(good) == len(rows)
    for (caption, obj), row in zip(good, rows, strict=True):
        assert row["ts"] == _ts_us(obj["start_time"])
        assert row["method"] == obj["method"] and row["path"] == obj["path"]
        assert row["response_code"] == int(obj["response_code"])
        assert row["response_flags"] == obj["response_flags"]
        assert row["response_code_details"] == obj["response_code_details"]
        assert row["duration_ms"] == float(obj["duration"])
        assert row["request_bytes"] == int(obj["bytes_received"])
        assert row["response_bytes"] == int(obj["bytes_sent"])
        assert row["request_id"] == obj["request_id"]
        assert row["authority"] == obj["authority"]
        assert row["upstream_cluster"] == obj["upstream_cluster"]
        assert row["protocol"] == ("grpc" if obj["grpc_status"] != "-" else "http")
        # captions say whose istio-proxy printed it: the client (shell) or the server
        assert row["reporter"] == ("source" if "/ shell Pod" in caption else "destination")
        assert row["destination_service_name"] == "mock-server"


def test_documented_cases_by_caption() -> None:
    lines, starts = _stream()
    rows = iter(r for r in parse_lines(enumerate(lines, 1)) if isinstance(r, dict))
    by_caption: dict[str, list[dict[str, Any]]] = {}
    for _first, (caption, obj) in sorted(starts.items()):
        if obj is not None:
            by_caption.setdefault(caption, []).append(next(rows))

    def one(caption_start: str) -> list[tuple[int, str]]:
        (caption,) = [c for c in by_caption if c.startswith(caption_start)]
        return [(r["response_code"], r["response_flags"]) for r in by_caption[caption]]

    assert one("[Text 2] HTTP OK") == [(200, "-")]
    assert one("[Text 6] Downstream TCP RST") == [(0, "DC")]
    assert one("[Text 9] Upstream TCP RST before") == [(503, "UC")]
    assert one("[Text 16] Circuit Breaking with Upstream Connection Pool Overflow") == [
        (503, "UO"),
        (200, "-"),
        (200, "-"),
    ]
    assert (503, "URX,UF") in one("[Text 22] Upstream Connection Failure with Timeout")
    assert one("[Text 24] Upstream Timeout") == [(504, "UT")]
    assert one("[Text 31] Downstream Remote Disconnect") == [(0, "DR")]
    (ok,) = by_caption["[Text 26] OK Case / shell Pod Access Log"]
    assert (ok["protocol"], ok["method"], ok["path"]) == (
        "grpc",
        "POST",
        "/mock.MockService/Status",
    )
    # the two reports of one request: the same request id from the client and the server
    (client,) = by_caption["[Text 2] HTTP OK Case / shell Pod Access Log"]
    (server,) = by_caption["[Text 3] HTTP OK Case / mock-server Access Log"]
    assert client["request_id"] == server["request_id"] == "0432d33a-0ffb-94fc-98fc-b9b322d5eaa3"
    assert (client["reporter"], server["reporter"]) == ("source", "destination")


def test_meshlens_import_accesslog_on_the_captures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines, _starts = _stream(_kubectl_prefix() + _TS)
    agent = _kubectl_prefix() + _TS + "2025-12-14T15:04:12.000000Z\tinfo\tEnvoy proxy is ready"
    lines.insert(5, agent)  # istio-agent's stderr, interleaved inside an entry
    log = tmp_path / "shell-istio-proxy.log"
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = tmp_path / "data"
    rc = main(["import", "accesslog", str(log), "--data-dir", str(data), "--progress", "false"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert f"imported 91 requests from {len(lines)} lines" in err
    assert f"skipped 31 of {len(lines)} lines" in err
    assert f"skipped {log}:6: not an access-log line: 2025-12-14T15:04:12.000000Z\tinfo" in err
    assert re.search(
        rf"skipped {re.escape(str(log))}:(\d+)-(\d+): invalid JSON at line \d+ column 26: "
        r"Expecting ',' delimiter: \"request_duration\": \"0\"한",
        err,
    )
    stored = dict(query(data, "requests", "response_flags, count(*)", rest="group by 1"))
    logged = Counter(o["response_flags"] for _c, o in _starts.values() if o is not None)
    assert stored == dict(logged)
    assert set(stored) == {"-", "DC", "DR", "UC", "UH", "UO", "UPE", "UR", "URX", "URX,UF", "UT"}
