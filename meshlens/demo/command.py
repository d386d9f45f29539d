"""`meshlens demo`: start the local mesh and everything around it; Ctrl-C stops it all.

With `--duration`, the demo exits 0 by itself when the time is up and prints the rollout's final
phase and weights. The data directory is kept for `meshlens sql` afterwards.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path

from meshlens.demo.stack import SCENARIOS, DemoError, DemoOptions, DemoStack
from meshlens.settings import parse_duration


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        default="healthy",
        help="how the canary (reviews v3) behaves: promoted or rolled back",
    )
    parser.add_argument(
        "--duration",
        type=parse_duration,
        default=0.0,
        help="stop after this long (e.g. 3m) and print the rollout's outcome",
    )
    parser.add_argument("--no-ui", dest="ui", action="store_false", help="no Streamlit app")
    parser.add_argument("--grpc-port", type=int, default=4317)
    parser.add_argument("--http-port", type=int, default=4318)
    parser.add_argument("--api-port", type=int, default=8080)
    parser.add_argument("--ui-port", type=int, default=8501)
    parser.add_argument("--rps", type=float, default=30.0, help="requests/s into productpage")
    parser.add_argument(
        "--interval", type=parse_duration, default=10.0, help="the gate's analysis interval"
    )


def _ui_url(o: DemoOptions) -> str:
    """The UI's sign-in URL: the token DemoStack.start wrote (signs in once, then leaves)."""
    from meshlens.dashboards.auth_rules import sign_in_url

    try:
        token = (o.data_dir / "demo" / "ui-token").read_text().strip()
    except OSError:
        token = ""
    return sign_in_url("localhost", o.ui_port, token)


def guide(o: DemoOptions) -> str:
    d = o.data_dir
    ui = f"  Streamlit app   {_ui_url(o)}\n" if o.ui else ""
    return f"""
meshlens demo is running (scenario: {o.scenario}); data in {d}
{ui}  HTTP API        http://localhost:{o.api_port}/api/v1/graph?since=5m
  Prometheus      http://localhost:{o.api_port}/metrics
  OTLP            gRPC 127.0.0.1:{o.grpc_port}, HTTP 127.0.0.1:{o.http_port}

What to look at: the Mesh page (bookinfo's graph, a lock on every mTLS edge), the Service page
for reviews (v2 against v3), and the Canary page (the gate moving reviews v3's weight every
{o.interval_s:g}s). In another terminal, try:
  .venv/bin/meshlens graph --data-dir {d} --since 5m
  .venv/bin/meshlens sql --data-dir {d} \\
      "select destination_workload, count(*) n, avg(mtls::int) mtls from requests group by 1"
  .venv/bin/meshlens canary analyze --data-dir {d} --service reviews \\
      --baseline v2 --canary v3 --since 5m
  .venv/bin/meshlens gate status --data-dir {d} --rollout reviews-v3
Ctrl-C stops everything.
"""


def run(args: argparse.Namespace) -> int:
    opts = DemoOptions(
        data_dir=Path(args.data_dir),
        scenario=args.scenario,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        api_port=args.api_port,
        ui_port=args.ui_port,
        duration_s=args.duration,
        ui=args.ui,
        rps=args.rps,
        interval_s=args.interval,
        log_level=args.log_level if args.log_level != "info" else "warning",
    )
    stack = DemoStack(opts)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    print(
        "starting meshlens demo: collector, bookinfo apps, Envoy sidecars, gate, UI ...", flush=True
    )
    try:
        stack.start()
    except DemoError as exc:
        print(f"meshlens demo: {exc}", file=sys.stderr)
        stack.stop()
        return 2
    except BaseException:
        stack.stop()
        raise
    print(guide(opts), flush=True)
    started = time.monotonic()
    code = 0
    try:
        while not done.wait(2.0):
            if opts.duration_s and time.monotonic() - started >= opts.duration_s:
                break
            dead = stack.check_children()
            if dead:
                print(f"meshlens demo: {dead}", file=sys.stderr)
                code = 1
                break
        status = stack.gate_status()
        print(
            "rollout reviews-v3: "
            + json.dumps(
                {
                    k: status.get(k)
                    for k in ("phase", "canary_weight", "weights", "verdict", "error")
                    if k in status
                }
            ),
            flush=True,
        )
        if stack.load is not None:
            print(f"load: {stack.load.sent} requests, codes {dict(stack.load.codes)}", flush=True)
    finally:
        stack.stop()
        print(f"stopped; data kept in {opts.data_dir}", flush=True)
    return code
