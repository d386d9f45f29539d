"""Poison WAL segments: bounded tries, then `<data>/deadletter/` with a metric; what is not the
segment's fault (a full disk, a worker crash it only shared) never dead-letters it."""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from meshlens.collector.selfmetrics import SelfMetrics, StoreStatsCollector
from meshlens.collector.store import wal_to_parquet
from meshlens.collector.store.layout import wal_dir
from meshlens.collector.store.store import Store, StoreOptions
from meshlens.collector.store.wal_to_parquet import DEAD_LETTER_DIR
from tests.collector.store import poison_decoder
from tests.collector.store.fake_decoder import DECODERS, KIND
from tests.collector.store.rows import bodies


def _opts(**kw: object) -> StoreOptions:
    base: dict[str, object] = {
        "decode_workers": 0,
        "decoders": poison_decoder.DECODERS,
        "maintenance_interval": 3600.0,
        "conversion_attempts": 2,
    }
    base.update(kw)
    return StoreOptions(**base)  # type: ignore[arg-type]


def _wait(pred: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        time.sleep(0.02)


def _append_segment(s: Store, payload: bytes) -> None:
    """Append `payload` as the only record of its WAL segment (roll before and after)."""
    ledger, writer = s._ledger, s._writer

    def roll() -> int:
        with ledger.lock:
            seq = ledger.seq
            writer.request_roll(seq)
        return seq

    s.append(KIND, payload)
    seq = roll()
    _wait(lambda: writer._active_seq != seq or writer._active is None, 10)


def _dead(data_dir: Path) -> list[str]:
    d = data_dir / DEAD_LETTER_DIR
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def test_a_segment_that_keeps_failing_is_dead_lettered_with_a_metric_and_can_be_replayed(
    tmp_path: Path,
) -> None:
    with Store(tmp_path, _opts()) as s:
        _append_segment(s, b"null-ts")
        assert s.wait_converted(30)  # done: the poison segment left the WAL
        st = s.stats()
        assert (st.segments_dead_lettered, st.conversion_failures) == (1, 2)
        assert list(wal_dir(tmp_path).glob("*.wal")) == []
        names = _dead(tmp_path)
        assert len(names) == 2 and names[1] == names[0] + ".reason", names
        reason = (tmp_path / DEAD_LETTER_DIR / names[1]).read_text()
        assert "null values" in reason
        s.append(KIND, b"after")  # the store goes on
        assert s.wait_converted(30)
        metrics = SelfMetrics()
        metrics.register(StoreStatsCollector(s.stats))
        assert b"meshlens_store_segments_dead_lettered_total 1.0" in metrics.render()
    assert bodies(tmp_path) == ["after"]

    with Store(tmp_path, _opts(decoders=DECODERS)) as fixed:  # a decoder that copes
        assert fixed.requeue_dead_letters() == 1
        assert fixed.wait_converted(30)
        assert fixed.stats().segments_dead_lettered == 0
    assert sorted(bodies(tmp_path)) == ["after", "null-ts"]
    assert _dead(tmp_path) == []  # the .reason note went with its segment


def test_a_full_disk_is_retried_and_never_dead_lettered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    def always_full(*args: object, **kw: object) -> list[Path]:
        raise OSError(errno.ENOSPC, "No space left on device")

    with Store(tmp_path, _opts(conversion_attempts=1)) as s:
        monkeypatch.setattr(wal_to_parquet, "write_table", always_full)
        s.append(KIND, b"kept")
        _wait(lambda: s.stats().conversion_failures >= 3)
        assert s.stats().segments_dead_lettered == 0
        assert len(list(wal_dir(tmp_path).glob("*.wal"))) >= 1
        monkeypatch.undo()
        assert s.wait_converted(30)
    assert bodies(tmp_path) == ["kept"] and _dead(tmp_path) == []


def test_a_segment_that_kills_its_worker_is_dead_lettered_and_spares_the_others(
    tmp_path: Path,
) -> None:
    with Store(tmp_path, _opts(decode_workers=2, flush_interval=3600)) as s:
        for payload in (b"a", b"crash-always", b"b", b"c", b"d"):
            _append_segment(s, payload)
        assert s.wait_converted(90)
        st = s.stats()
        assert st.segments_dead_lettered == 1
    assert sorted(bodies(tmp_path)) == ["a", "b", "c", "d"]
    dead = _dead(tmp_path)
    assert len(dead) == 2
    assert "BrokenProcessPool" in (tmp_path / DEAD_LETTER_DIR / dead[1]).read_text()


def test_a_worker_crash_once_is_not_held_against_the_segment(tmp_path: Path) -> None:
    """One crash (an outside kill, an OOM kill of the moment) with a limit of one try: the
    segment is converted, nothing is dead-lettered."""
    marker = tmp_path / "crashed-once"
    with Store(tmp_path / "d", _opts(decode_workers=2, conversion_attempts=1)) as s:
        _append_segment(s, b"x")
        _append_segment(s, b"crash-once:" + str(marker).encode())
        _append_segment(s, b"y")
        assert s.wait_converted(60)
        assert marker.exists()
        assert s.stats().segments_dead_lettered == 0
    assert sorted(bodies(tmp_path / "d")) == ["crashed", "x", "y"]
