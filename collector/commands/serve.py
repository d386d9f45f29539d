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
import json
import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Final

from collector.config import SERVE, Setting, add_settings, parse_duration
from collector.server import BoundPorts, Collector

log = logging.getLogger(__name__)

STATE_FILE: Final = "serve.json"
SERVE_ONLY: Final = (
    Setting(
        "shutdown_grace", 5.0, "how long in-flight requests may run after SIGTERM", parse_duration
    ),
)


def configure(parser: argparse.ArgumentParser) -> None:
    add_settings(parser, (*SERVE, *SERVE_ONLY))


def state_path(data_dir: Path) -> Path:
    return Path(data_dir) / STATE_FILE


def write_state(data_dir: Path, ports: BoundPorts) -> Path:
    path = state_path(data_dir)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    doc = {
        "pid": os.getpid(),
        "grpc_port": ports.grpc,
        "http_port": ports.http,
        "api_port": ports.api,
    }
    tmp.write_text(json.dumps(doc) + "\n")
    os.replace(tmp, path)
    return path


def run(args: argparse.Namespace) -> int:
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
            stop.wait()
            log.info("%s received: shutting down", signal.Signals(received[0]).name)
        finally:
            path.unlink(missing_ok=True)
    finally:
        collector.stop(grace_s=args.shutdown_grace)
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
