"""`meshlens signals`: golden signals per service / workload / version over time buckets."""

from __future__ import annotations

import argparse
import sys

from meshlens.analytics.commands.common import ORIGIN, PROMETHEUS_URL, add_common, run_safely
from meshlens.analytics.commands.output import csv_text, format_table, json_text
from meshlens.analytics.window import window_from_args
from meshlens.settings import Setting, add_settings, parse_duration


def _by(text: str) -> tuple[str, ...]:
    return tuple(b.strip() for b in text.split(",") if b.strip())


SIGNAL_SETTINGS = (
    Setting(
        "by",
        ("service",),
        "dimensions, comma-separated: service, workload, version, namespace, app, source",
        _by,
    ),
    Setting("step", 60.0, "bucket width", parse_duration),
    Setting("service", "", "only this service (name, host or canonical name)", str),
)


def configure(parser: argparse.ArgumentParser) -> None:
    add_common(parser, ("table", "json", "csv"))
    add_settings(parser, (*SIGNAL_SETTINGS, PROMETHEUS_URL, ORIGIN))


def run(args: argparse.Namespace) -> int:
    from meshlens.analytics.api import signals_for, signals_json

    def body() -> int:
        df = signals_for(
            args.data_dir,
            window_from_args(args),
            by=args.by,
            step_s=args.step,
            service=args.service or None,
            prometheus_url=args.prometheus_url or None,
        )
        if args.format == "json":
            sys.stdout.write(json_text(signals_json(df)))
        elif args.format == "csv":
            sys.stdout.write(csv_text(df.columns, df.rows()))
        else:
            sys.stdout.write(format_table(df.columns, df.rows()))
        return 0

    return run_safely("signals", body)
