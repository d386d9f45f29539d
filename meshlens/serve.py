"""`meshlens serve`: run the collector until SIGTERM or SIGINT, then shut down cleanly.

Once every port is bound and the store has recovered, it prints one line on stdout

    meshlens serve ready grpc=4317 http=4318 api=8080

and writes `<data_dir>/serve.json` ({"pid", "grpc_port", "http_port", "api_port"}, atomically),
so scripts and tests that asked for port 0 learn the real ports. The file is removed on a clean
exit; a stale one (from a crash) names a pid that is gone. Exit code 0 after a signal-driven
shutdown (stop accepting, drain, flush the store).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Final

from meshlens.collector.decode import limits
from meshlens.collector.errors import ConfigError
from meshlens.collector.store.location import StoreLocation
from meshlens.durable_file import write_atomic
from meshlens.server import BoundPorts, Collector
from meshlens.settings import OBJECT_STORE, SERVE, Setting, add_settings, parse_duration

log = logging.getLogger(__name__)

STATE_FILE: Final = "serve.json"
SERVE_ONLY: Final = (
    Setting(
        "shutdown_grace", 5.0, "how long in-flight requests may run after SIGTERM", parse_duration
    ),
)


def configure(parser: argparse.ArgumentParser) -> None:
    add_settings(parser, (*SERVE, *SERVE_ONLY, *OBJECT_STORE))


# glibc's mallopt parameter number for the arena cap (malloc.h: M_ARENA_MAX = -8).
_M_ARENA_MAX: Final = -8
MALLOC_ARENAS: Final = 2


def limit_malloc_arenas() -> None:
    """Cap glibc malloc arenas, for this process and (via the environment) its decode workers.

    Why: the receive path handles ~600 KB requests on many threads. glibc gives each thread
    its own arena (up to 8 per core) and, after the first large free, raises its mmap threshold
    so such buffers are carved from those arenas, which then keep the memory: measured 1.5 GiB
    RSS at 270k spans/s with the defaults, ~350 MiB with 2 arenas at the same rate. Must run
    before threads start. An operator's own MALLOC_ARENA_MAX wins."""
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return
    os.environ["MALLOC_ARENA_MAX"] = str(MALLOC_ARENAS)  # spawned decode workers read this
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "mallopt"):
            libc.mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
    except OSError:  # not glibc (musl has no arenas to cap)
        pass


def state_path(data_dir: Path) -> Path:
    return Path(data_dir) / STATE_FILE


def write_state(data_dir: Path, ports: BoundPorts) -> Path:
    path = state_path(data_dir)
    doc = {
        "pid": os.getpid(),
        "grpc_port": ports.grpc,
        "http_port": ports.http,
        "api_port": ports.api,
    }
    write_atomic(path, json.dumps(doc) + "\n", fsync=False)  # a hint for tools, not data
    return path


def run(args: argparse.Namespace) -> int:
    location = StoreLocation.parse(args.data_dir)
    if location.remote is not None:  # the WAL must be on a local disk
        raise ConfigError(
            "--data-dir", str(location), "serve needs a local directory; use --object-store"
        )
    limit_malloc_arenas()
    # Decode workers are spawned: they read the decode limits from the environment.
    limits.export_to_environ(vars(args), os.environ)
    limits.set_current(None)
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    collector = Collector(args)
    try:
        ports = collector.start()
        path = write_state(Path(args.data_dir), ports)
        print(
            f"meshlens serve ready grpc={ports.grpc} http={ports.http} api={ports.api}", flush=True
        )
        try:
            # Poll, not a bare wait(): the kernel may deliver the signal to one of gRPC's
            # threads, and then a blocked main thread would never run the Python handler.
            while not stop.wait(0.2):
                pass
            log.info("%s received: shutting down", signal.Signals(received[0]).name)
        finally:
            path.unlink(missing_ok=True)
    finally:
        collector.stop(grace_s=args.shutdown_grace)
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
