"""`meshlens gate run|status|pause|resume|promote|abort`: the progressive-rollout controller.

    meshlens gate run --config rollout.yaml          drive the rollout until it ends
    meshlens gate status [--rollout NAME] [--format json]
    meshlens gate pause|resume|promote|abort --rollout NAME [--reason TEXT]

Manual commands are queued under <data_dir>/gate/<rollout>.commands/ and applied by the running
gate within --poll (the Flagger hooks read them too when Flagger drives).
Exit codes of `run`: 0 succeeded, 1 failed (rolled back), 3 stopped before the end, 2 bad
config or usage.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from meshlens.analytics.errors import AnalyticsError
from meshlens.settings import Setting, add_settings, parse_duration

ACTIONS: Final = ("run", "status", "pause", "resume", "promote", "abort")
GATE_SETTINGS: Final = (
    Setting("format", "text", "status output format", str, ("text", "json")),
    Setting("poll", 0.5, "how often a running gate checks for manual commands", parse_duration),
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS, help="what to do")
    parser.add_argument("--config", default="", help="rollout.yaml (run; or to name the rollout)")
    parser.add_argument("--rollout", default="", help="rollout name (status and commands)")
    parser.add_argument("--reason", default="", help="why (recorded with manual commands)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        default=None,
        help="run: judge and record only; touch no traffic",
    )
    add_settings(parser, GATE_SETTINGS)


def _rollout_name(args: argparse.Namespace) -> str:
    if args.rollout:
        return str(args.rollout)
    if args.config:
        from meshlens.analytics.gate.config import load_rollout_config

        return load_rollout_config(Path(args.config)).rollout
    return ""


def status_json(data_dir: Path, rollout: str = "") -> list[dict[str, Any]]:
    from meshlens.analytics.gate.state import is_locked, list_states, load_state, pending_commands

    states = [load_state(data_dir, rollout)] if rollout else list_states(data_dir)
    out = []
    for st in states:
        if st is None:
            continue
        d = st.to_json()
        d["running"] = is_locked(data_dir, st.rollout)
        d["queued_commands"] = [
            b.get("command", "") for _p, b in pending_commands(data_dir, st.rollout)
        ]
        out.append(d)
    return out


def _status_text(items: list[dict[str, Any]]) -> str:
    lines = []
    for d in items:
        score = "-" if d["last_score"] is None else f"{d['last_score']:.1f}"
        when = datetime.fromtimestamp(d["updated_at"], tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(
            f"{d['rollout']}: {d['phase']}, canary {d['canary_weight']}%"
            f"{' (dry-run)' if d['dry_run'] else ''}, step {d['step_index'] + 1}, "
            f"analyses {d['analyses']}, failed {d['failed_checks']}, last verdict "
            f"{d['last_verdict'] or '-'} score {score}, "
            f"{'running' if d['running'] else 'not running'}, updated {when}Z\n"
            f"  {d['reason']}"
            + (f"\n  queued: {', '.join(d['queued_commands'])}" if d["queued_commands"] else "")
        )
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    import dataclasses

    from meshlens.analytics.gate.actuators.base import build_actuator
    from meshlens.analytics.gate.config import load_rollout_config
    from meshlens.analytics.gate.judging import StoreJudge
    from meshlens.analytics.gate.runner import Gate

    if not args.config:
        print("meshlens gate run: --config rollout.yaml is required", file=sys.stderr)
        return 2
    cfg = load_rollout_config(Path(args.config))
    if args.dry_run:
        cfg = dataclasses.replace(cfg, dry_run=True)
    actuator = build_actuator(cfg)
    judge = StoreJudge(
        Path(args.data_dir),
        service=cfg.service,
        baseline=cfg.baseline,
        canary=cfg.canary,
        selector=cfg.selector,
        config_path=cfg.judge_config,
    )

    def show(row: dict[str, Any]) -> None:
        verdict = row["verdict"] or "-"
        print(
            f"{row['ts']:%H:%M:%S} {row['rollout']}: {row['action']} -> {row['phase']}, "
            f"canary {row['canary_weight']}%, verdict {verdict}: "
            f"{json.loads(row['details'])['reason']}",
            flush=True,
        )

    stop = threading.Event()

    def on_signal(_sig: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(
        f"meshlens gate: rollout {cfg.rollout} ({cfg.service} {cfg.baseline} -> "
        f"{cfg.canary}), steps {list(cfg.steps)}, every {cfg.interval_s:g}s, actuator "
        f"{actuator.describe()}{' [dry-run]' if cfg.dry_run else ''}",
        flush=True,
    )
    gate = Gate(
        cfg,
        Path(args.data_dir),
        actuator=actuator,
        judge=judge,
        poll_s=args.poll,
        on_decision=show,
        sleep=stop.wait,
    )
    state = gate.run(stop)
    return {"succeeded": 0, "failed": 1}.get(state.phase, 3)


def run(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir)
    try:
        if args.action == "run":
            return _run(args)
        rollout = _rollout_name(args)
        if args.rollout:
            from meshlens.analytics.gate.state import rollout_name_problem

            if problem := rollout_name_problem(rollout):
                print(f"meshlens gate {args.action}: --rollout: {problem}", file=sys.stderr)
                return 2
        if args.action == "status":
            items = status_json(data_dir, rollout)
            if args.format == "json":
                print(json.dumps(items[0] if rollout and items else items, indent=1))
            elif items:
                print(_status_text(items))
            else:
                print("no rollouts" + (f" named {rollout}" if rollout else ""))
            return 0 if items or not rollout else 1
        if not rollout:
            print(
                f"meshlens gate {args.action}: --rollout NAME (or --config) is required",
                file=sys.stderr,
            )
            return 2
        from meshlens.analytics.gate.state import is_locked, queue_command

        queue_command(data_dir, rollout, args.action, by="cli", reason=args.reason)
        where = (
            "the running gate applies it within a poll interval"
            if is_locked(data_dir, rollout)
            else "no gate is running it here: it applies when the gate starts, and the "
            "Flagger hooks honour it"
        )
        print(f"{args.action} queued for rollout {rollout}; {where}")
        return 0
    except AnalyticsError as exc:
        print(f"meshlens gate {args.action}: {exc}", file=sys.stderr)
        return 2
