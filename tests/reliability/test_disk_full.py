"""Disk full under a real `meshlens serve`: its data directory on an 8 MiB tmpfs (we mount it;
without the privilege to mount, the fallback is the test wrapper's injected ENOSPC on every WAL
write). Receivers answer UNAVAILABLE (gRPC) / 503 (HTTP) with a retry hint, nothing
acknowledged is lost, and ingest resumes when space returns (tmpfs remounted larger)."""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.collector.conftest import http_post, wait_for
from tests.reliability.harness import (
    Ledger,
    assert_exactly_once,
    kill9,
    launch,
    span_load,
    spans_request,
)

PB = {"Content-Type": "application/x-protobuf"}


@dataclass
class Disk:
    path: Path
    mounted: bool  # a real tmpfs; else ENOSPC is injected while `flag` exists
    flag: Path

    def knobs(self) -> dict[str, str]:
        return {} if self.mounted else {"RELIABILITY_ENOSPC_FILE": str(self.flag)}

    def make_full(self) -> None:
        if not self.mounted:
            self.flag.touch()
        # a real tmpfs fills up from the load itself

    def free(self) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,size=256m", str(self.path)], check=True)
        else:
            self.flag.unlink(missing_ok=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Disk]:
    path = tmp_path / "disk"
    path.mkdir()
    if os.environ.get("RELIABILITY_NO_TMPFS") == "1":  # exercise the fallback on purpose
        out = subprocess.CompletedProcess([], 1, "", "RELIABILITY_NO_TMPFS=1")
    else:
        out = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
    disk = Disk(path, out.returncode == 0, tmp_path / "enospc")
    if not disk.mounted:
        print(f"tmpfs mount not permitted ({out.stderr.strip()}): injecting ENOSPC instead")
    try:
        yield disk
    finally:
        if disk.mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def test_disk_full_is_unavailable_loses_nothing_and_recovers(small_disk: Disk) -> None:
    data = small_disk.path / "data"
    sp = launch(data, knobs=small_disk.knobs())
    ledger = Ledger()
    http_status: dict[int, int] = {}
    retry_after: list[str] = []
    stop_http = threading.Event()

    def http_load() -> None:
        """OTLP/HTTP requests alongside the gRPC load (their spans go to the same ledger)."""
        rnd = random.Random(99)
        while not stop_http.is_set():
            first = ledger.take(50)
            status, _, headers = http_post(
                sp.otlp_url("/v1/traces"), spans_request(first, 50, time.time_ns(), rnd), PB
            )
            ledger.record(first, 50, "OK" if status == 200 else f"HTTP {status}")
            http_status[status] = http_status.get(status, 0) + 1
            if status == 503:
                retry_after.append(headers.get("Retry-After", ""))
                time.sleep(0.05)

    try:
        small_disk.make_full()
        http = threading.Thread(target=http_load, daemon=True)
        http.start()
        with span_load(sp.grpc_target, ledger, threads=2, spans=500):
            wait_for(
                lambda: ledger.codes.get("UNAVAILABLE", 0) >= 5 and 503 in http_status,
                90,
                f"UNAVAILABLE and 503 once the disk is full ({ledger.codes})",
            )
        stop_http.set()
        http.join(30)
        assert sp.proc.poll() is None, "the collector died on a full disk"
        assert set(ledger.codes) <= {"OK", "UNAVAILABLE", "HTTP 503"}, ledger.codes
        details, trailers = ledger.errors["UNAVAILABLE"]
        assert "no space left on device" in details.lower(), details
        assert int(trailers["grpc-retry-pushback-ms"]) > 0  # the retry hint
        assert "google.rpc.retryinfo-bin" in trailers
        assert all(int(r) >= 1 for r in retry_after), retry_after

        small_disk.free()
        acked = len(ledger.acked)
        with span_load(sp.grpc_target, ledger, threads=2, spans=200):
            wait_for(
                lambda: len(ledger.acked) >= acked + 20_000,
                60,
                "ingest to resume once space returned",
            )
        assert sp.stop() == 0, sp.log()[-3000:]
    finally:
        stop_http.set()
        if sp.proc.poll() is None:
            kill9(sp)
    stored = assert_exactly_once(data, ledger)
    print(
        f"disk full: gRPC {ledger.codes}, HTTP {http_status}; acknowledged "
        f"{len(ledger.acked)}, stored {len(stored)}"
    )
    assert "Traceback" not in sp.log(), sp.log()[-3000:]
