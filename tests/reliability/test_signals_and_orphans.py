"""Stop signals to the whole process group (Ctrl-C, systemd's KillMode=control-group, `docker
stop` of a shell entrypoint) reach the decode workers too: they must ignore them and let the
collector drain, so every acknowledged span is converted. After `kill -9` of the collector
alone, nothing it started (decode workers, multiprocessing's resource tracker) keeps running."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from meshlens.collector.store.layout import wal_dir
from tests.collector.conftest import ServeProcess, wait_for
from tests.reliability.harness import Ledger, assert_exactly_once, launch, span_load


def _group(pgid: int) -> dict[int, str]:
    """pid -> command line of every live (not zombie) process in process group `pgid`."""
    out: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            out[int(entry)] = cmd
    return out


def _reap_group(sp: ServeProcess) -> None:
    """Leave nothing behind, whatever the test found."""
    if _group(sp.proc.pid):
        try:
            os.killpg(sp.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if sp.proc.poll() is None:
        sp.proc.kill()
    sp.proc.wait(30)


def _ingest_until_converting(sp: ServeProcess, ledger: Ledger) -> None:
    wait_for(lambda: len(ledger.acked) >= 4000, 60, "acknowledged spans")
    wait_for(lambda: any(Path(sp.data_dir, "spans").rglob("*.parquet")), 60, "a converted segment")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_to_the_process_group_drains_every_acknowledged_span(
    tmp_path: Path, sig: signal.Signals
) -> None:
    data = tmp_path / "data"
    sp = launch(data, "--decode-workers", "2")
    try:
        # serve + 2 decode workers (+ multiprocessing's resource tracker)
        wait_for(lambda: len(_group(sp.proc.pid)) >= 3, 60, "the decode workers")
        ledger = Ledger()
        with span_load(sp.grpc_target, ledger, threads=2, spans=200) as stop:
            _ingest_until_converting(sp, ledger)
            os.killpg(sp.proc.pid, sig)  # what Ctrl-C / systemd / docker do
            rc = sp.proc.wait(60)
            stop.set()
        log = sp.log()
        assert rc == 0, log
        assert "BrokenProcessPool" not in log and "stays in the WAL" not in log, log
        assert list(wal_dir(data).glob("*.wal")) == [], "acknowledged data left unconverted"
        assert_exactly_once(data, ledger)
        wait_for(lambda: not _group(sp.proc.pid), 20, "every child to exit")
    finally:
        _reap_group(sp)


def test_after_kill_9_of_serve_no_child_process_remains(tmp_path: Path) -> None:
    sp = launch(tmp_path / "data", "--decode-workers", "2")
    try:
        ledger = Ledger()
        with span_load(sp.grpc_target, ledger, threads=1, spans=200):
            _ingest_until_converting(sp, ledger)
            children = {p: c for p, c in _group(sp.proc.pid).items() if p != sp.proc.pid}
            print("children of serve:", children)
            assert len(children) >= 2, children  # the decode workers
            os.kill(sp.proc.pid, signal.SIGKILL)  # the collector alone, not its group
            sp.proc.wait(30)
        try:
            wait_for(lambda: not _group(sp.proc.pid), 20, "every child to die")
        except AssertionError:
            raise AssertionError(f"left running after kill -9: {_group(sp.proc.pid)}") from None
    finally:
        _reap_group(sp)
