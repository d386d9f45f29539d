"""`meshlens check routing|authz|mtls --config PATH`: Istio config against observed traffic.

Exit codes: 0 no problem, 1 a check found a problem (usable in CI on config changes),
2 bad usage or an invalid/unsupported resource (the message names file, document and field).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from meshlens.analytics.errors import AnalyticsError
from meshlens.analytics.istio.checks import CHECKS, run_check
from meshlens.analytics.istio.report import render_text
from meshlens.analytics.istio.resources import IstioConfig, load_config, merge
from meshlens.analytics.window import add_window_arguments, window_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("check", choices=CHECKS, help="which check to run")
    parser.add_argument(
        "--config",
        "-c",
        action="append",
        default=[],
        type=Path,
        help="YAML file or directory of Istio resources (repeatable)",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="also read resources from the Kubernetes API (in-cluster or --kubeconfig)",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="kubeconfig for --cluster (default $KUBECONFIG or ~/.kube/config)",
    )
    parser.add_argument("--namespace", default=None, help="with --cluster: only this namespace")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    add_window_arguments(parser)


def _config(args: argparse.Namespace) -> IstioConfig:
    configs = [load_config(args.config)] if args.config else []
    if args.cluster:
        import os

        from meshlens.analytics.istio.cluster import from_kubeconfig, in_cluster, load_from_cluster

        creds = None if args.kubeconfig else in_cluster()
        if creds is None:
            path = args.kubeconfig or Path(
                os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config"))
            )
            creds = from_kubeconfig(path)
        configs.append(load_from_cluster(creds, args.namespace))
    if not configs:
        raise SystemExit("meshlens check: give --config PATH and/or --cluster")
    return merge(configs)


def run(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
        report = run_check(args.check, Path(args.data_dir), window_from_args(args), config)
    except AnalyticsError as exc:
        print(f"meshlens check {args.check}: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(report.to_json(), indent=2, default=str))
    else:
        print(render_text(report))
    return 0 if report.ok else 1
