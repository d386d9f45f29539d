"""Crashes the fuzzers found, kept as named regression tests.

Each input here once made a decoder raise something other than `DecodeError` (so the importer
or the converter sees an unexpected exception instead of a skipped, counted bad line).
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from meshlens.collector.decode.access_log_text import decode_lines_record, parse_access_log_line
from meshlens.collector.errors import DecodeError
from meshlens.collector.store.records import Record, RecordKind
from tests.reliability.test_fuzz import JSON_LINE


def _line(**values: object) -> str:
    return json.dumps({**json.loads(JSON_LINE), **values})


@pytest.mark.parametrize(
    "values",
    [
        # int(float("1E309")) -> OverflowError, not caught by access_log_text._int
        pytest.param({"bytes_received": "1E309"}, id="bytes-received-1e309-overflows"),
        # fits a Python int, not the int64 column: OverflowError in pa.array
        pytest.param({"bytes_received": "1E20"}, id="bytes-received-1e20-past-int64"),
        # past the int32 response_code column: ArrowInvalid in pa.array
        pytest.param({"response_code": 2147483648}, id="response-code-past-int32"),
    ],
)
def test_json_access_log_line_with_out_of_range_number(values: dict[str, object]) -> None:
    line = _line(**values)
    row = parse_access_log_line(line)  # a row (value dropped/clamped) or None: never raises
    try:
        out = decode_lines_record(Record(RecordKind.ACCESS_LOG_LINES, 1, line.encode()))
    except DecodeError:
        return
    assert isinstance(out["requests"], pa.Table)
    assert out["requests"].num_rows == (1 if row else 0)


def test_importer_skips_a_line_with_an_overflowing_number(tmp_path: object) -> None:
    """`meshlens import accesslog` crashed with an OverflowError traceback on this one line
    instead of skipping and counting it."""
    from pathlib import Path

    from meshlens.cli import main
    from tests.collector.receivers.rows import count_rows

    d = Path(str(tmp_path))
    log = d / "access.log"
    log.write_text("\n".join([JSON_LINE, _line(bytes_received="1E309"), JSON_LINE]) + "\n")
    assert main(["import", "accesslog", "--data-dir", str(d / "data"), str(log)]) == 0
    assert count_rows(d / "data", "requests") == 2


@pytest.mark.parametrize(
    ("index", "value"),
    [
        # found by the soak fuzzer: a 20-digit response code in Istio's text format
        pytest.param(4, "99999999999999999999", id="text-response-code-20-digits"),
        pytest.param(9, "99999999999999999999", id="text-bytes-received-20-digits"),
        pytest.param(11, "1e309", id="text-duration-1e309"),
    ],
)
def test_text_access_log_line_with_out_of_range_number(index: int, value: str) -> None:
    from tests.reliability.test_fuzz import TEXT_LINE

    parts = TEXT_LINE.split(" ")
    parts[index] = value
    line = " ".join(parts)
    row = parse_access_log_line(line)
    try:
        out = decode_lines_record(Record(RecordKind.ACCESS_LOG_LINES, 1, line.encode()))
    except DecodeError:
        return
    assert out["requests"].num_rows == (1 if row else 0)
