from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from meshlens.collector.store import wal
from meshlens.collector.store.records import Record, RecordKind


def _records(n: int) -> list[Record]:
    return [
        Record(RecordKind.OTLP_TRACES, 1_700_000_000_000_000_000 + i, b"p" * (i * 37), b"c" * i)
        for i in range(n)
    ]


def _segment(path: Path, records: list[Record]) -> list[int]:
    """Write a segment; returns the end offset of each frame."""
    data = bytearray(wal.MAGIC)
    ends = []
    for r in records:
        data += wal.frame_record(r)
        ends.append(len(data))
    path.write_bytes(bytes(data))
    return ends


def test_frame_round_trip(tmp_path: Path) -> None:
    records = _records(20)
    path = tmp_path / "local_0000000000000001.wal"
    ends = _segment(path, records)
    got, scanned = wal.read_records(path)
    assert got == records
    assert scanned == wal.Scan(ends[-1], ends[-1], 20, None)


def test_empty_payload_and_large_payload_round_trip(tmp_path: Path) -> None:
    records = [
        Record(RecordKind.ENVOY_ALS, 1, b"", b""),
        Record(RecordKind.ENVOY_ALS, 2, os.urandom(3 * 1024 * 1024), b"node"),
    ]
    path = tmp_path / "s.wal"
    _segment(path, records)
    assert wal.read_records(path)[0] == records


def test_every_torn_cut_keeps_exactly_the_complete_frames(tmp_path: Path) -> None:
    records = _records(6)
    path = tmp_path / "s.wal"
    ends = _segment(path, records)
    data = path.read_bytes()
    for cut in range(len(wal.MAGIC), len(data) + 1):
        complete = sum(1 for e in ends if e <= cut)
        scanned = wal.scan(data[:cut])
        assert scanned.frames == complete
        assert scanned.good_bytes == (ends[complete - 1] if complete else len(wal.MAGIC))
        assert (scanned.problem is None) == (cut in (len(wal.MAGIC), *ends))


def test_repair_truncates_torn_tail_and_logs_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = _records(5)
    path = tmp_path / "local_0000000000000007.wal"
    ends = _segment(path, records)
    with open(path, "ab") as f:
        f.write(wal.frame_record(records[0])[:11])  # a torn write: 11 bytes of a frame
    with caplog.at_level(logging.WARNING, logger="meshlens.collector.store.wal"):
        scanned = wal.repair(path)
    assert scanned.problem is not None and "torn" in scanned.problem
    assert path.stat().st_size == ends[-1]
    assert wal.read_records(path)[0] == records
    msg = caplog.text
    assert f"at byte {ends[-1]}" in msg and "truncated 11 tail bytes" in msg
    saved = list((tmp_path / wal.CORRUPT_DIR).iterdir())
    assert len(saved) == 1 and saved[0].read_bytes() == wal.frame_record(records[0])[:11]


def test_repair_truncates_at_checksum_mismatch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = _records(4)
    path = tmp_path / "s.wal"
    ends = _segment(path, records)
    data = bytearray(path.read_bytes())
    data[ends[2] - 1] ^= 0x40  # flip a bit in the body of the third frame
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        scanned = wal.repair(path)
    assert scanned.problem == "checksum mismatch"
    assert scanned.frames == 2 and scanned.good_bytes == ends[1]
    assert wal.read_records(path)[0] == records[:2]
    assert f"checksum mismatch at byte {ends[1]}" in caplog.text
    assert f"truncated {ends[3] - ends[1]} tail bytes" in caplog.text


def test_corrupt_length_field_is_caught(tmp_path: Path) -> None:
    records = _records(3)
    path = tmp_path / "s.wal"
    ends = _segment(path, records)
    data = bytearray(path.read_bytes())
    data[ends[0]] ^= 0x01  # the length of frame 2 is now off by one
    scanned = wal.scan(bytes(data))
    assert scanned.frames == 1 and scanned.good_bytes == ends[0]
    data[ends[0] + 3] = 0xFF  # a huge length
    assert wal.scan(bytes(data)).problem is not None


def test_bad_magic_drops_the_whole_segment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.wal"
    path.write_bytes(b"not a wal segment at all")
    with caplog.at_level(logging.WARNING):
        scanned = wal.repair(path)
    assert scanned.problem == "not a meshlens WAL segment (bad magic)"
    assert not path.exists()
    assert "dropping the whole segment" in caplog.text


def test_torn_header_counts_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "s.wal"
    path.write_bytes(wal.MAGIC[:3])
    assert wal.repair(path).frames == 0
    assert not path.exists()


def test_segment_file_rolls_back_a_failed_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seg = wal.WalFile(tmp_path / "s.wal")
    good = wal.frame(b"acknowledged")
    seg.write(good)
    calls = {"n": 0}
    real = wal.WalFile._write

    def half_then_enospc(self: wal.WalFile, parts: list[memoryview]) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real(self, [parts[0][: len(parts[0]) // 2]])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(wal.WalFile, "_write", half_then_enospc)
    with pytest.raises(OSError, match="No space"):
        seg.write(wal.frame_parts(b"head", b"x" * 1000))
    monkeypatch.undo()
    assert seg.size == len(wal.MAGIC) + len(good)
    seg.write(wal.frame(b"later"))
    seg.sync()
    seg.close()
    records = [bytes(b) for _o, b in wal.iter_frames((tmp_path / "s.wal").read_bytes())]
    assert records == [b"acknowledged", b"later"]


def test_frame_parts_are_the_frame_of_their_concatenation() -> None:
    for head, payload in ((b"", b""), (b"h", b""), (b"", b"p" * 70_000), (b"head", b"payload")):
        assert b"".join(wal.frame_parts(head, payload)) == wal.frame(head + payload)


def test_short_writes_resume_mid_buffer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """writev may stop anywhere, also inside a buffer: the rest follows, in order."""
    seg = wal.WalFile(tmp_path / "s.wal")
    real = wal.WalFile._write

    def three_bytes_at_a_time(self: wal.WalFile, parts: list[memoryview]) -> int:
        return real(self, [parts[0][:3]])

    monkeypatch.setattr(wal.WalFile, "_write", three_bytes_at_a_time)
    frames = [wal.frame_parts(f"h{i}".encode(), b"p" * i) for i in range(5)]
    seg.write([b for f in frames for b in f])
    monkeypatch.undo()
    seg.close()
    got = [bytes(b) for _o, b in wal.iter_frames((tmp_path / "s.wal").read_bytes())]
    assert got == [f"h{i}".encode() + b"p" * i for i in range(5)]
