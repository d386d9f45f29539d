"""Write-ahead log segments: framing, scanning, repair, and the append-only segment file.

A segment is `MAGIC` followed by frames:

    length (u32 LE) | crc32 (u32 LE, over the 4 length bytes then the body) | body

The body is `Record.encode()`. The checksum covers the length too, so a torn or flipped length
field is caught as well as a torn body. Scanning stops at the first frame that does not check;
everything from there on is the "tail". Only the active segment can have a torn tail (closed
segments were fsynced before they were handed on), and only bytes never acknowledged can be in
it: an append is acknowledged after its batch is written (and fsynced), and a batch is written
after every earlier one.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from isal.isal_zlib import crc32

from meshlens.collector.store.records import Record

log = logging.getLogger(__name__)

MAGIC: Final = b"MLWAL01\n"
FRAME: Final = struct.Struct("<II")
IOV_MAX: Final = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 16
MAX_FRAME_BYTES: Final = 1 << 30  # a length above this is corruption, not a big request
CORRUPT_DIR: Final = "corrupt"


def checksum(length_bytes: bytes, *body: bytes | memoryview) -> int:
    """CRC-32 over the length bytes, then the body (given whole or in consecutive pieces)."""
    # isal's CRC-32 is zlib's (same polynomial and values) at ~100 GB/s instead of ~5: it was
    # 4-6% of both the receive path and the conversion, which each checksum every byte once.
    crc = crc32(length_bytes)
    for piece in body:
        crc = crc32(piece, crc)
    return crc


def frame_parts(head: bytes, payload: bytes) -> tuple[bytes, bytes]:
    """The frame of the body `head + payload` as two buffers (the frame header with `head`,
    then `payload`) without copying the payload: requests are large, and each copy of them
    cost the receive path more than the checksum."""
    n = struct.pack("<I", len(head) + len(payload))
    return n + struct.pack("<I", checksum(n, head, payload)) + head, payload


def frame(body: bytes) -> bytes:
    """Frame one record body for the WAL, in one buffer."""
    return b"".join(frame_parts(body, b""))


def frame_record(record: Record) -> bytes:
    return frame(record.encode())


@dataclass(frozen=True, slots=True)
class Scan:
    """What a scan of a segment found: frames up to `good_bytes`, and why it stopped early."""

    good_bytes: int
    file_bytes: int
    frames: int
    problem: str | None  # None when the whole file is valid

    @property
    def tail_bytes(self) -> int:
        return self.file_bytes - self.good_bytes


def iter_frames(data: bytes | memoryview) -> Iterator[tuple[int, memoryview]]:
    """(offset, body) for each valid frame after MAGIC; stops silently at the first bad one.
    Use `scan` to learn where and why it stopped."""
    for offset, body, _problem in _walk(memoryview(data)):
        if body is None:
            return
        yield offset, body


def _walk(view: memoryview) -> Iterator[tuple[int, memoryview | None, str | None]]:
    size = len(view)
    if size < len(MAGIC) or bytes(view[: len(MAGIC)]) != MAGIC:
        if size == 0 or (size < len(MAGIC) and bytes(view) == MAGIC[:size]):
            yield 0, None, f"segment header torn ({size} of {len(MAGIC)} bytes)"
        else:
            yield 0, None, "not a meshlens WAL segment (bad magic)"
        return
    pos = len(MAGIC)
    while pos < size:
        if pos + FRAME.size > size:
            yield pos, None, f"torn frame header ({size - pos} bytes)"
            return
        length, crc = FRAME.unpack_from(view, pos)
        if length > MAX_FRAME_BYTES:
            yield pos, None, f"implausible frame length {length}"
            return
        end = pos + FRAME.size + length
        if end > size:
            yield pos, None, f"torn frame (needs {length} bytes, {size - pos - FRAME.size} present)"
            return
        body = view[pos + FRAME.size : end]
        if checksum(bytes(view[pos : pos + 4]), body) != crc:
            yield pos, None, "checksum mismatch"
            return
        yield pos, body, None
        pos = end


def scan(data: bytes | memoryview) -> Scan:
    view = memoryview(data)
    good = min(len(MAGIC), len(view))
    frames = 0
    for offset, body, problem in _walk(view):
        if body is None:
            return Scan(offset if offset else 0, len(view), frames, problem)
        frames += 1
        good = offset + FRAME.size + len(body)
    return Scan(good, len(view), frames, None)


def read_frames(data: bytes | memoryview) -> tuple[list[bytes], Scan]:
    """Every valid frame body (up to the first bad frame) and the scan, in one pass (the
    checksums are computed once)."""
    view = memoryview(data)
    good = min(len(MAGIC), len(view))
    bodies: list[bytes] = []
    for offset, body, problem in _walk(view):
        if body is None:
            return bodies, Scan(offset if offset else 0, len(view), len(bodies), problem)
        bodies.append(bytes(body))
        good = offset + FRAME.size + len(body)
    return bodies, Scan(good, len(view), len(bodies), None)


def read_records(path: Path, limit: int | None = None) -> tuple[list[Record], Scan]:
    """Every valid record of a segment (up to the first bad frame, and within the first `limit`
    bytes when given), and the scan result."""
    data = path.read_bytes()
    if limit is not None:
        data = data[:limit]
    records = [Record.decode(bytes(body)) for _off, body in iter_frames(data)]
    return records, scan(data)


def repair(path: Path) -> Scan:
    """Truncate a segment's bad tail in place (saving the dropped bytes under wal/corrupt/ for
    inspection) and log what was dropped. Returns the scan. A segment with a bad header is
    moved aside whole."""
    data = path.read_bytes()
    result = scan(data)
    if result.problem is None:
        return result
    if result.good_bytes < len(MAGIC):
        if result.file_bytes:
            _save_aside(path, 0, data)
        log.warning(
            "WAL segment %s: %s; dropping the whole segment (%d bytes, never acknowledged)",
            path,
            result.problem,
            result.file_bytes,
        )
        path.unlink()
        return result
    _save_aside(path, result.good_bytes, data[result.good_bytes :])
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, result.good_bytes)
        os.fsync(fd)
    finally:
        os.close(fd)
    log.warning(
        "WAL segment %s: %s at byte %d; truncated %d tail bytes (never acknowledged), kept %d "
        "records",
        path,
        result.problem,
        result.good_bytes,
        result.tail_bytes,
        result.frames,
    )
    return result


def _save_aside(path: Path, offset: int, data: bytes) -> None:
    try:
        d = path.parent / CORRUPT_DIR
        d.mkdir(exist_ok=True)
        (d / f"{path.name}.{offset}.{time.time_ns()}.tail").write_bytes(data)
    except OSError as exc:  # forensics only; never block recovery on it
        log.warning("could not save the dropped tail of %s: %s", path, exc)


class WalFile:
    """The active segment: append-only, one writer thread. `size` is the end of the last
    complete write; after a failed write the file is cut back to it so no garbage sits between
    acknowledged records."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self.size = 0
        self.broken = False
        try:
            self.write(MAGIC)
        except OSError:
            self.close()
            raise

    def write(self, data: bytes | Sequence[bytes]) -> None:
        """Write all of `data` (one buffer, or several in order: one writev, no joining copy)
        at the end; on error cut the file back and re-raise."""
        views = [memoryview(data)] if isinstance(data, bytes) else [memoryview(b) for b in data]
        total = sum(v.nbytes for v in views)
        i = 0  # the first view not written in full
        try:
            while i < len(views):
                done = self._write(views[i : i + IOV_MAX])
                while i < len(views) and done >= views[i].nbytes:
                    done -= views[i].nbytes
                    i += 1
                if done:  # a short write ended inside views[i]
                    views[i] = views[i][done:]
        except OSError:
            self.rollback()
            raise
        self.size += total

    def _write(self, parts: list[memoryview]) -> int:  # seam for fault-injection tests
        return os.writev(self.fd, parts)

    def sync(self) -> None:
        os.fsync(self.fd)

    def rollback(self) -> None:
        try:
            os.ftruncate(self.fd, self.size)
            os.lseek(self.fd, self.size, os.SEEK_SET)
        except OSError as exc:
            # The tail may hold part of an unacknowledged batch; stop using this file (a scan
            # stops at the torn frame, and recovery truncates it).
            self.broken = True
            log.error("cannot cut WAL segment %s back to %d bytes: %s", self.path, self.size, exc)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
