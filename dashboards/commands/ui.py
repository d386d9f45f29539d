"""`meshlens ui`: the Streamlit app on http://HOST:PORT (default 127.0.0.1:8501), headless.

Replaces this process with `python -m streamlit run dashboards/app.py` (exec: signals reach
Streamlit directly, no orphan), the store passed in MESHLENS_DATA_DIR (the app reads it through
dashboards.data).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Final

from meshlens.collector.store.location import StoreLocation
from meshlens.settings import Setting, add_settings

APP: Final = Path(__file__).resolve().parents[1] / "app.py"

UI: Final = (
    Setting("port", 8501, "port of the Streamlit app (0 is not supported by Streamlit)", int),
    Setting("host", "127.0.0.1", "address the app binds to (0.0.0.0 in containers)", str),
)


def configure(parser: argparse.ArgumentParser) -> None:
    add_settings(parser, UI)


def command(args: argparse.Namespace) -> list[str]:
    """The streamlit command line (tests start the same thing)."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.port",
        str(args.port),
        "--server.address",
        str(args.host),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
    ]


def run(args: argparse.Namespace) -> int:
    location = StoreLocation.parse(args.data_dir)
    ddir = str(location) if location.local is None else str(location.local.resolve())
    env = {**os.environ, "MESHLENS_DATA_DIR": ddir}
    print(f"meshlens ui: http://{args.host}:{args.port}/ (store {args.data_dir})", file=sys.stderr)
    sys.stderr.flush()
    cmd = command(args)
    os.execve(cmd[0], cmd, env)
    return 0  # not reached
