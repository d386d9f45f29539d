from __future__ import annotations

import errno
import logging
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshlens.collector.errors import Overloaded, PayloadTooLarge, StoreUnavailable
from meshlens.collector.store import wal, wal_to_parquet
from meshlens.collector.store.layout import list_table_files, wal_dir, wal_segment_path
from meshlens.collector.store.records import Record, RecordKind
from meshlens.collector.store.store import Store, StoreOptions
from meshlens.collector.store.wal_to_parquet import DEAD_LETTER_DIR
from tests.collector.store.fake_decoder import DECODERS, KIND, LENIENT
from tests.collector.store.rows import bodies, read_table


def _opts(**kw: object) -> StoreOptions:
    base: dict[str, object] = {
        "decode_workers": 0,
        "decoders": DECODERS,
        "maintenance_interval": 3600.0,
    }
    base.update(kw)
    return StoreOptions(**base)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path, _opts())
    s.start()
    yield s
    s.close()


def _wait(pred: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        time.sleep(0.01)


def _wal_files(data_dir: Path) -> list[Path]:
    return sorted(wal_dir(data_dir).glob("*.wal"))


def test_append_is_converted_to_parquet_exactly_once(tmp_path: Path, store: Store) -> None:
    for i in range(50):
        store.append(KIND, f"id{i}".encode(), items=1)
    assert store.wait_converted(30)
    assert sorted(bodies(tmp_path)) == sorted(f"id{i}" for i in range(50))
    st = store.stats()
    assert (st.records_appended, st.records_converted, st.rows_written) == (50, 50, 50)
    assert st.wal_bytes_pending == 0 and st.wal_lag_seconds == 0.0
    assert _wal_files(tmp_path) == []


def test_worker_processes_convert_too(tmp_path: Path) -> None:
    with Store(tmp_path, _opts(decode_workers=2, flush_interval=0.05)) as s:
        for i in range(30):
            s.append(KIND, f"w{i}".encode())
            if i % 10 == 9:
                s.wait_converted(60)
        assert s.wait_converted(60)
        assert s.stats().segments_converted >= 3
    assert sorted(bodies(tmp_path)) == sorted(f"w{i}" for i in range(30))


def test_group_commit_many_threads(tmp_path: Path) -> None:
    n_threads, per_thread = 32, 40
    with Store(tmp_path, _opts()) as s:
        barrier = threading.Barrier(n_threads)

        def run(t: int) -> None:
            barrier.wait()
            for i in range(per_thread):
                s.append(KIND, f"t{t}-{i}".encode())

        threads = [threading.Thread(target=run, args=(t,)) for t in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        st = s.stats()
        assert st.records_appended == n_threads * per_thread
        # Group commit: far fewer write+fsync rounds than appends.
        assert st.batches_written < st.records_appended
        assert s.wait_converted(30)
    got = Counter(bodies(tmp_path))
    assert len(got) == n_threads * per_thread and set(got.values()) == {1}


def test_acknowledged_data_is_queryable_within_5s_by_default(tmp_path: Path) -> None:
    opts = StoreOptions(decode_workers=0, decoders=DECODERS)
    with Store(tmp_path, opts) as s:
        t0 = time.monotonic()
        s.append(KIND, b"fresh")
        _wait(lambda: bodies(tmp_path) == ["fresh"], timeout=5.0)
        assert time.monotonic() - t0 < 5.0


def test_a_record_that_fails_to_decode_is_skipped_not_the_segment(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="meshlens.collector.store.store"):
        store.append(KIND, b"a")
        store.append(KIND, b"bad one")
        store.append(KIND, b"b")
        assert store.wait_converted(30)
    assert sorted(bodies(tmp_path)) == ["a", "b"]
    assert store.stats().decode_errors == 1
    assert "1 of 3 records could not be decoded" in caplog.text
    assert "DecodeError" in caplog.text
    # The failed record is kept, in WAL framing, for a replay with a fixed decoder.
    (dead,) = (tmp_path / DEAD_LETTER_DIR).iterdir()
    assert dead.name == _wal_name_of_first_file(tmp_path)
    bodies_ = [Record.decode(bytes(b)).payload for _o, b in wal.iter_frames(dead.read_bytes())]
    assert bodies_ == [b"bad one"]


def _wal_name_of_first_file(data_dir: Path) -> str:
    f = list_table_files(data_dir, "logs")[0]
    return wal_segment_path(data_dir, f.node, f.lo).name


def test_a_decoder_that_cannot_be_imported_keeps_the_segment(tmp_path: Path) -> None:
    s = Store(tmp_path, _opts(decoders=((int(KIND), "tests.no_such_module:decode"),)))
    s.start()
    s.append(KIND, b"precious")
    assert not s.wait_converted(1.5)
    assert s.stats().conversion_failures >= 1
    s.close(timeout=30)
    assert len(_wal_files(tmp_path)) == 1  # kept for the next start
    with Store(tmp_path, _opts()) as s2:
        assert s2.wait_converted(30)
    assert bodies(tmp_path) == ["precious"]


def test_a_crashed_decode_worker_is_replaced_and_the_segment_retried(tmp_path: Path) -> None:
    marker = tmp_path / "crashed-once"
    with Store(tmp_path / "d", _opts(decode_workers=1)) as s:
        s.append(KIND, b"crash-once:" + str(marker).encode())
        assert s.wait_converted(60)
        assert marker.exists() and s.stats().conversion_failures == 1
        s.append(KIND, b"after")
        assert s.wait_converted(60)
    assert sorted(bodies(tmp_path / "d")) == ["after", "crashed"]


def test_sequence_numbers_never_go_back_when_the_clock_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store(tmp_path, _opts()) as s:
        s.append(KIND, b"now")
    (first,) = list_table_files(tmp_path, "logs")
    assert _wal_files(tmp_path) == []  # nothing in the WAL to learn the last number from
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() - 86_400 * 10**9)  # a day back
    with Store(tmp_path, _opts()) as s:
        s.append(KIND, b"earlier clock")
    monkeypatch.undo()
    seqs = sorted(f.lo for f in list_table_files(tmp_path, "logs"))
    assert len(seqs) == 2 and seqs[0] == first.lo


def test_write_failure_is_unavailable_and_the_store_recovers(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.append(KIND, b"before")
    real = wal.WalFile._write

    def enospc(self: wal.WalFile, parts: list[memoryview]) -> int:
        real(self, [parts[0][:7]])  # part of the batch reaches the file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(wal.WalFile, "_write", enospc)
    for i in range(3):
        with pytest.raises(StoreUnavailable, match="No space left on device"):
            store.append(KIND, f"lost{i}".encode())
    monkeypatch.undo()
    store.append(KIND, b"after")
    assert store.wait_converted(30)
    assert sorted(bodies(tmp_path)) == ["after", "before"]
    st = store.stats()
    assert st.append_failures == 3 and st.records_appended == 2


def test_fsync_failure_is_unavailable_never_an_ack(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.append(KIND, b"ok1")

    def eio(self: wal.WalFile) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(wal.WalFile, "sync", eio)
    with pytest.raises(StoreUnavailable, match="Input/output error"):
        store.append(KIND, b"not-acked")
    monkeypatch.undo()
    store.append(KIND, b"ok2")
    assert store.wait_converted(30)
    assert sorted(bodies(tmp_path)) == ["ok1", "ok2"]


def test_segment_creation_failure_then_recovery(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def enospc(self: wal.WalFile, path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(wal.WalFile, "__init__", enospc)
    with pytest.raises(StoreUnavailable, match="No space"):
        store.append(KIND, b"x")
    monkeypatch.undo()
    store.append(KIND, b"y")
    assert store.wait_converted(30)
    assert bodies(tmp_path) == ["y"]


def test_memory_budget_overload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    real = wal.WalFile._write

    def slow(self: wal.WalFile, parts: list[memoryview]) -> int:
        release.wait(10)
        return real(self, parts)

    monkeypatch.setattr(wal.WalFile, "_write", slow)
    with Store(tmp_path, _opts(memory_budget=1000)) as s:
        first = threading.Thread(target=s.append, args=(KIND, b"1" * 600))
        first.start()
        _wait(lambda: s.stats().bytes_in_flight > 0)
        with pytest.raises(Overloaded, match="memory budget") as exc:
            s.append(KIND, b"2" * 600)
        assert exc.value.retry_after_s > 0
        release.set()
        first.join()
        s.append(KIND, b"3" * 600)
        assert s.stats().overloaded_rejections == 1


def test_disk_budget_overload(tmp_path: Path) -> None:
    with Store(tmp_path, _opts(disk_budget=100, flush_interval=3600)) as s:
        s.append(KIND, b"a" * 200)
        with pytest.raises(Overloaded, match="disk budget"):
            s.append(KIND, b"b")
        assert s.wait_converted(30)
        s.append(KIND, b"c")


def test_closed_store_refuses_and_close_converts_everything(tmp_path: Path) -> None:
    s = Store(tmp_path, _opts(flush_interval=3600))
    s.start()
    s.append(KIND, b"pending")
    s.close()
    assert bodies(tmp_path) == ["pending"]
    assert _wal_files(tmp_path) == []
    with pytest.raises(StoreUnavailable, match="store is closed"):
        s.append(KIND, b"late")


def test_one_writer_per_node(tmp_path: Path, store: Store) -> None:
    with pytest.raises(StoreUnavailable, match="another process writes as node 'local'"):
        Store(tmp_path, _opts()).start()
    other = Store(tmp_path, _opts(node="other"))
    other.start()
    other.close()


def test_recovery_truncates_torn_tail_and_converts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = wal_segment_path(tmp_path, "local", 42)
    path.parent.mkdir(parents=True)
    frames = [wal.frame_record(Record(KIND, time.time_ns(), f"r{i}".encode())) for i in range(3)]
    good = wal.MAGIC + b"".join(frames)
    path.write_bytes(good + frames[0][:5])
    with caplog.at_level(logging.WARNING), Store(tmp_path, _opts()) as s:
        assert s.wait_converted(30)
        assert s.stats().wal_bytes_truncated == 5
        s.append(KIND, b"new")
        assert s.wait_converted(30)
    assert sorted(bodies(tmp_path)) == ["new", "r0", "r1", "r2"]
    assert f"at byte {len(good)}; truncated 5 tail bytes" in caplog.text
    los = [f.lo for f in list_table_files(tmp_path, "logs")]
    assert len(los) == 2 and los[0] == 42 and los[1] > 42  # recovered segment keeps its name


def test_replay_after_crash_before_wal_delete_is_idempotent(tmp_path: Path) -> None:
    """Crash after the Parquet files were written but before the WAL segment was deleted:
    the restart converts the segment again into the same file, same rows."""
    saved = tmp_path / "saved"
    data = tmp_path / "data"
    with Store(data, _opts(flush_interval=3600)) as s:
        for i in range(20):
            s.append(KIND, f"x{i}".encode())
        (segment,) = _wal_files(data)
        saved.mkdir()
        shutil.copy(segment, saved / segment.name)
        assert s.wait_converted(30)
    files = list_table_files(data, "logs")
    before = {f.path.name: f.path.read_bytes() for f in files}
    assert len(read_table(data)) == 20
    shutil.copy(saved / segment.name, segment)  # the state a crash would leave
    with Store(data, _opts()) as s:
        assert s.wait_converted(30)
    after = {f.path.name: f.path.read_bytes() for f in list_table_files(data, "logs")}
    assert after == before
    assert Counter(bodies(data)) == Counter(f"x{i}" for i in range(20))
    assert _wal_files(data) == []


def test_sequence_numbers_grow_across_restarts(tmp_path: Path) -> None:
    for round_ in range(3):
        with Store(tmp_path, _opts()) as s:
            s.append(KIND, f"r{round_}".encode())
    los = [f.lo for f in list_table_files(tmp_path, "logs")]
    assert len(set(los)) == 3
    assert sorted(bodies(tmp_path)) == ["r0", "r1", "r2"]


def test_stats_report_pending_wal_and_lag(tmp_path: Path) -> None:
    with Store(tmp_path, _opts(flush_interval=3600)) as s:
        s.append(KIND, b"abc", items=7)
        _wait(lambda: s.stats().wal_lag_seconds > 0.01)
        st = s.stats()
        assert st.items_appended == 7 and st.wal_bytes_pending > 0
        assert st.wal_segments_pending == 1 and st.last_fsync_seconds > 0
        assert s.wait_converted(30)
        st = s.stats()
        assert st.wal_bytes_pending == 0 and st.segments_converted == 1
        assert st.last_flush_seconds > 0


def test_durability_none_acks_after_write(tmp_path: Path) -> None:
    with Store(tmp_path, _opts(durability="none")) as s:
        s.append(KIND, b"fast")
        assert s.wait_converted(30)
    assert bodies(tmp_path) == ["fast"]


def test_invalid_options() -> None:
    with pytest.raises(ValueError, match="invalid store node name"):
        Store(Path("x"), StoreOptions(node="Bad_Name"))
    with pytest.raises(ValueError, match="durability"):
        Store(Path("x"), StoreOptions(durability="sometimes"))


def test_failed_conversion_is_retried_and_keeps_the_wal(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:

    real = wal_to_parquet.write_table
    calls = {"n": 0}

    def full_once(*args: object, **kw: object) -> list[Path]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(wal_to_parquet, "write_table", full_once)
    store.append(KIND, b"survivor")
    assert store.wait_converted(30)
    assert bodies(tmp_path) == ["survivor"]
    assert store.stats().conversion_failures == 1
    assert _wal_files(tmp_path) == []


def test_conversion_failing_at_shutdown_leaves_the_segment_for_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    def always_full(*args: object, **kw: object) -> list[Path]:
        raise OSError(errno.ENOSPC, "No space left on device")

    s = Store(tmp_path, _opts(flush_interval=3600))
    s.start()
    s.append(KIND, b"kept")
    monkeypatch.setattr(wal_to_parquet, "write_table", always_full)
    s.close(timeout=30)
    assert len(_wal_files(tmp_path)) == 1 and bodies(tmp_path) == []
    monkeypatch.undo()
    with Store(tmp_path, _opts()) as s2:
        assert s2.wait_converted(30)
    assert bodies(tmp_path) == ["kept"]


def test_options_from_serve_settings() -> None:
    import argparse

    from meshlens.settings import SERVE, add_settings

    parser = argparse.ArgumentParser()
    add_settings(parser, SERVE, environ={})
    ns = parser.parse_args(
        [
            "--durability",
            "none",
            "--flush-interval",
            "250ms",
            "--retention",
            "2d",
            "--decode-workers",
            "0",
            "--node",
            "edge-1",
            "--disk-budget",
            "1GiB",
        ]
    )
    opts = StoreOptions.from_settings(ns, compact_grace=5.0)
    assert (opts.durability, opts.flush_interval, opts.retention) == ("none", 0.25, 172800.0)
    assert (opts.decode_workers, opts.node, opts.disk_budget) == (0, "edge-1", 1024**3)
    assert opts.compact_grace == 5.0 and opts.memory_budget == 64 * 1024 * 1024


def test_real_otlp_traces_through_worker_processes(tmp_path: Path) -> None:
    from tests.collector.receivers.payloads import traces_request

    opts = StoreOptions(decode_workers=1, flush_interval=0.1, maintenance_interval=3600)
    with Store(tmp_path, opts) as s:
        for seed in range(5):
            s.append(
                RecordKind.OTLP_TRACES, traces_request(40, seed=seed).SerializeToString(), items=40
            )
        assert s.wait_converted(60)
        assert s.stats().rows_written == 200
    spans = read_table(tmp_path, "spans")
    assert spans.num_rows == 200
    assert len(set(spans.column("span_id").to_pylist())) == 200
    assert set(spans.column("service_name").to_pylist()) == {"checkout"}


def test_dead_letters_can_be_requeued_after_a_decoder_fix(tmp_path: Path) -> None:
    with Store(tmp_path, _opts()) as s:
        s.append(KIND, b"good")
        s.append(KIND, b"bad-1")
        assert s.wait_converted(30)
        assert s.stats().decode_errors == 1
    assert bodies(tmp_path) == ["good"]
    with Store(tmp_path, _opts(decoders=LENIENT)) as s:
        assert s.requeue_dead_letters() == 1
        assert s.wait_converted(30)
        assert s.requeue_dead_letters() == 0
    assert sorted(bodies(tmp_path)) == ["good", "ok-1"]
    assert list((tmp_path / DEAD_LETTER_DIR).iterdir()) == []


def test_a_record_over_the_frame_limit_is_refused(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wal, "MAX_FRAME_BYTES", 1000)
    with pytest.raises(PayloadTooLarge, match="exceeds the limit of 936 bytes"):
        store.append(KIND, b"x" * 937)
    store.append(KIND, b"x" * 936)


def test_close_during_appends_keeps_every_acknowledged_record(tmp_path: Path) -> None:
    s = Store(tmp_path, _opts())
    s.start()
    acked: list[str] = []
    refused = threading.Event()

    def run(t: int) -> None:
        i = 0
        while True:
            rid = f"t{t}-{i}"
            try:
                s.append(KIND, rid.encode())
            except StoreUnavailable:
                refused.set()
                return
            acked.append(rid)
            i += 1

    threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    _wait(lambda: len(acked) > 200)
    s.close()
    for t in threads:
        t.join(10)
    assert refused.is_set()
    assert Counter(bodies(tmp_path)) == Counter(acked)
