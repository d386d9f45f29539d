"""`meshlens import accesslog`: files and stdin into Parquet, bad lines reported."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from meshlens.cli import main
from meshlens.collector.store.layout import visible_files
from tests.collector.envoy.test_access_log_text import (
    _PRETTY,
    ENVOY_UH,
    ISTIO_DOC_IN,
    ISTIO_DOC_OUT,
    ISTIO_JSON,
)

ROOT = Path(__file__).resolve().parents[3]


def _rows(data_dir: Path) -> list[dict[str, object]]:
    files = [p for p in (data_dir / "requests").rglob("*.parquet")]
    out: list[dict[str, object]] = []
    for f in sorted(files):
        out.extend(pq.read_table(f).to_pylist())
    return out


def test_import_files_with_bad_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "istio-proxy.log"
    log.write_text(
        "\n".join(
            [
                "2020-11-25T21:26:18.412345678Z " + ISTIO_DOC_OUT,  # kubectl logs --timestamps
                "2020-11-25T21:26:19.000000000Z info Envoy proxy is ready",
                ISTIO_JSON,
                "",
                "garbage line",
                ISTIO_DOC_IN,
            ]
        )
        + "\n"
    )
    gz = tmp_path / "more.log.gz"
    gz.write_bytes(gzip.compress((ENVOY_UH).encode()))
    data = tmp_path / "data"
    rc = main(
        [
            "import",
            "accesslog",
            str(log),
            str(gz),
            "--data-dir",
            str(data),
            "--proxy-pod",
            "httpbin-74fb669cc6-k7d9h",
            "--proxy-namespace",
            "foo",
            "--progress",
            "false",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "imported 4 requests from 6 lines" in err
    assert "skipped 2 of 6 lines" in err
    assert f"{log}:2: not an access-log line: info Envoy proxy is ready" in err
    assert f"{log}:5: not an access-log line: garbage line" in err
    rows = _rows(data)
    assert len(rows) == 4
    assert {r["origin"] for r in rows} == {"file"}
    inbound = [r for r in rows if r["reporter"] == "destination"]
    assert [(r["destination_workload"], r["destination_namespace"]) for r in inbound] == [
        ("httpbin", "foo")
    ]
    outbound = [r for r in rows if r["reporter"] == "source"]
    assert {r["source_workload"] for r in outbound} == {"httpbin"}
    assert sorted(int(str(r["response_code"])) for r in rows) == [418, 418, 418, 503]
    # readers see the files
    assert visible_files(data, "requests", None, None)


def test_import_stdin_subprocess(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "meshlens", "import", "accesslog", "-", "--data-dir", str(data)],
        input=(ISTIO_DOC_OUT + "\n" + ISTIO_DOC_IN + "\n").encode(),
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert len(_rows(data)) == 2


def test_import_nothing_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "app.log"
    log.write_text("hello\nworld\n")
    rc = main(["import", "accesslog", str(log), "--data-dir", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "no access-log lines found in 2 lines" in err
    assert not (tmp_path / "d" / "requests").exists()


def test_import_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["import", "accesslog", str(tmp_path / "nope.log"), "--data-dir", str(tmp_path)])
    assert rc == 2
    assert "no such file" in capsys.readouterr().err


def test_import_batches(tmp_path: Path) -> None:
    from meshlens.collector.commands.importer import import_files

    log = tmp_path / "a.log"
    log.write_text((ISTIO_DOC_OUT + "\n") * 25)
    stats = import_files(tmp_path / "d", [str(log)], batch_rows=10)
    assert (stats.rows, stats.files_written) == (25, 3)
    assert len(_rows(tmp_path / "d")) == 25


def test_import_multi_line_json_with_kubectl_prefixes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A JSON accessLogFormat under TEXT encoding, as `kubectl logs --prefix --timestamps`
    prints it: every line prefixed; one entry truncated, one line of agent output."""
    prefix = "[pod/httpbin-74fb669cc6-k7d9h/istio-proxy] 2020-11-25T21:26:18.412345678Z "
    pretty = _PRETTY.split("\n")
    lines = [
        *pretty,
        "2020-11-25T21:26:19.000000Z\tinfo\tEnvoy proxy is ready",
        *pretty[:4],  # cut short
        *pretty,
    ]
    log = tmp_path / "istio-proxy.log"
    log.write_text("".join(f"{prefix}{line}\n" for line in lines))
    data = tmp_path / "data"
    rc = main(["import", "accesslog", str(log), "--data-dir", str(data), "--progress", "false"])
    err = capsys.readouterr().err
    assert rc == 0, err
    n = len(pretty)
    assert f"imported 2 requests from {len(lines)} lines" in err
    assert f"skipped 5 of {len(lines)} lines" in err
    assert f"skipped {log}:{n + 1}: not an access-log line: 2020-11-25T21:26:19" in err
    assert (
        f"skipped {log}:{n + 2}-{n + 5}: JSON object not closed before line {n + 6} starts "
        'another: "upstream_host": "10.44.1.27:80",'
    ) in err
    assert [r["request_id"] for r in _rows(data)] == ["84961386-6d84-929d-98bd-c5aee93b5c88"] * 2


def test_reports_merge_runs_of_one_reason(tmp_path: Path) -> None:
    from meshlens.collector.commands.importer import import_files

    log = tmp_path / "a.log"
    log.write_text("\n".join(["one", "two", "", "three", ISTIO_DOC_OUT, "four"]) + "\n")
    reports: list[str] = []
    stats = import_files(tmp_path / "d", [str(log)], report=reports.append)
    assert reports == [
        f"{log}:1-4 (3 lines): not an access-log line: one",
        f"{log}:6: not an access-log line: four",
    ]
    assert (stats.lines, stats.rows, stats.skipped, stats.reports) == (5, 1, 4, 2)
