"""`meshlens canary analyze`: judge a canary version against its baseline.

Exit codes: 0 pass, 1 fail, 3 inconclusive, 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Final, TextIO

from meshlens.analytics.judge.model import MODES, SELECTORS, Verdict
from meshlens.settings import Setting, add_settings

CANARY_SETTINGS: Final = (
    Setting("format", "table", "output format", str, ("table", "json")),
    Setting("selector", "version", "how baseline/canary are selected", str, SELECTORS),
    Setting("canary_config", "", "canary config file (YAML, or a Kayenta canary-config JSON)", str),
)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="canary_command", metavar="SUBCOMMAND")
    sub.required = True
    a = sub.add_parser("analyze", help="judge --canary against --baseline for --service")
    a.add_argument(
        "--service", required=True, help="destination service (name, canonical service or FQDN)"
    )
    a.add_argument("--baseline", required=True, help="baseline version/subset/workload")
    a.add_argument("--canary", required=True, help="canary version/subset/workload")
    a.add_argument("--mode", choices=MODES, default=None, help="override the config's mode")
    a.add_argument(
        "--expected-share",
        type=float,
        default=None,
        help="the canary's expected traffic share (request_share metrics)",
    )
    add_settings(a, CANARY_SETTINGS[:2])
    cfg = CANARY_SETTINGS[2]
    a.add_argument(
        "--config",
        "--canary-config",
        dest=cfg.name,
        default=cfg.resolve(os.environ),
        help=f"{cfg.help}; default: the judge's defaults (env {cfg.env})",
    )
    from meshlens.analytics.window import add_window_arguments

    add_window_arguments(a)
    # The common flags must also parse after the subcommand (`canary analyze --data-dir D`);
    # SUPPRESS keeps a value given before the subcommand from being reset to the default.
    from meshlens.settings import COMMON

    for s in COMMON:
        a.add_argument(
            s.flag,
            dest=s.name,
            default=argparse.SUPPRESS,
            type=s.convert,
            help=f"{s.help} (env {s.env})",
        )


def render_table(v: Verdict, out: TextIO) -> None:
    from meshlens.analytics.commands.output import format_table

    out.write(f"verdict: {v.verdict}   score: {v.score:g}   mode: {v.mode}\n")
    out.write(f"reason:  {v.reason}\n")
    if v.window:
        out.write(
            f"window:  {v.window['start']} .. {v.window['end']}   service {v.service}: "
            f"baseline {v.baseline} vs canary {v.canary}\n\n"
        )
    cols = [
        "metric",
        "class",
        "baseline",
        "canary",
        "effect",
        "ci",
        "n_base",
        "n_canary",
        "e-value",
        "crit",
    ]
    rows = []
    for m in v.metrics:
        ci = (
            ""
            if m.ci is None
            else "[" + ", ".join("" if x is None else f"{x:.4g}" for x in m.ci) + "]"
        )
        rows.append(
            [
                m.name,
                m.classification,
                m.baseline,
                m.canary,
                m.effect,
                ci,
                m.n_baseline,
                m.n_canary,
                m.e_value,
                "yes" if m.critical else "",
            ]
        )
    out.write(format_table(cols, rows))
    out.write("\n")
    for m in v.metrics:
        out.write(f"- {m.name}: {m.reason}\n")
    for w in v.warnings:
        out.write(f"warning: {w}\n")


def run(args: argparse.Namespace) -> int:
    from meshlens.analytics.catalog import connect
    from meshlens.analytics.errors import AnalyticsError
    from meshlens.analytics.judge.analyze import analyze
    from meshlens.analytics.judge.config import default_config, load_config
    from meshlens.analytics.window import window_from_args

    try:
        path = args.canary_config
        config = load_config(path) if path else default_config()
        if args.mode:
            config = replace(config, mode=args.mode)
        if args.expected_share is not None and not 0 < args.expected_share < 1:
            raise ValueError(f"--expected-share must be in (0, 1), got {args.expected_share}")
        window = window_from_args(args)
        conn = connect(Path(args.data_dir), window)
        try:
            verdict = analyze(
                conn,
                service=args.service,
                baseline=args.baseline,
                canary=args.canary,
                window=window,
                config=config,
                selector=args.selector,
                data_dir=Path(args.data_dir),
                expected_share=args.expected_share,
            )
        finally:
            conn.close()
    except (AnalyticsError, ValueError) as exc:
        print(f"meshlens canary analyze: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        sys.stdout.write(json.dumps(verdict.to_json(), indent=2) + "\n")
    else:
        render_table(verdict, sys.stdout)
    return verdict.exit_code
