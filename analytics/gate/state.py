"""The gate's persisted state and its manual-command queue, under <data_dir>/gate/.

    <rollout>.json              the state (atomic: temp file, fsync, rename, fsync dir)
    <rollout>.lock              flock held by the running gate (one controller per rollout)
    <rollout>.commands/*.json   queued commands (pause|resume|promote|abort), oldest first

The running gate owns <rollout>.json; the CLI never writes it while a gate runs, it queues a
command instead, so two writers never race on the state file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from meshlens.analytics.errors import GateStateError
from meshlens.durable_file import write_atomic

PHASES: Final = ("initializing", "progressing", "paused", "promoting", "succeeded", "failed")
TERMINAL: Final = frozenset({"succeeded", "failed"})
COMMANDS: Final = ("pause", "resume", "promote", "abort")
STATE_VERSION: Final = 1
# A rollout name becomes a file name under <data_dir>/gate/: a Kubernetes object name (DNS-1123
# subdomain, which Flagger canaries and Argo Rollouts use) plus upper case and '_' (rollout.yaml
# names). No '/', and it starts with a letter or digit, so never '.' or '..'.
ROLLOUT_NAME_RULE: Final = (
    "1-253 letters, digits, '-', '.' or '_', starting and ending with a letter or digit"
)
_ROLLOUT_NAME: Final = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?")


def rollout_name_problem(name: object) -> str:
    """Why `name` is not a valid rollout name ('' when it is)."""
    if isinstance(name, str) and _ROLLOUT_NAME.fullmatch(name):
        return ""
    return f"rollout name {name!r} is invalid: use {ROLLOUT_NAME_RULE}"


@dataclass(frozen=True, slots=True)
class GateState:
    """Where a rollout is. Times are epoch seconds (the injected clock's)."""

    rollout: str
    service: str = ""
    phase: str = "initializing"
    canary_weight: int = 0  # the weight last applied and verified
    pending_weight: int | None = None  # decided, not yet confirmed applied
    pending_action: str = ""  # start | advance | promote | rollback | reapply
    step_index: int = -1  # index into config steps of canary_weight (-1: before the first)
    failed_checks: int = 0
    consecutive_failures: int = 0
    inconclusive_streak: int = 0
    step_successes: int = 0
    analyses: int = 0
    started_at: float = 0.0  # the first step was applied (canary started getting traffic)
    step_started_at: float = 0.0
    last_progress_at: float = 0.0
    last_analysis_at: float = 0.0
    next_analysis_at: float = 0.0
    paused_from: str = ""  # phase to go back to on resume
    reason: str = ""
    last_verdict: str = ""
    last_score: float | None = None
    dry_run: bool = False
    updated_at: float = 0.0
    revision: int = 0

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL

    def to_json(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GateState:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        state = cls(**values)
        if state.phase not in PHASES:
            raise ValueError(f"unknown phase {state.phase!r}")
        return state


def gate_dir(data_dir: Path) -> Path:
    return data_dir / "gate"


def _rollout_path(data_dir: Path, rollout: str, suffix: str) -> Path:
    """<data_dir>/gate/<rollout><suffix>, refused unless it stays directly in the gate dir
    (every entry validates the name too; this is the last line)."""
    root = gate_dir(data_dir)
    problem = rollout_name_problem(rollout)
    if problem:
        raise GateStateError(str(root), problem)
    path = root / f"{rollout}{suffix}"
    if os.path.dirname(os.path.normpath(path)) != os.path.normpath(root):
        raise GateStateError(str(root), f"rollout {rollout!r} leaves the gate directory")
    return path


def state_path(data_dir: Path, rollout: str) -> Path:
    return _rollout_path(data_dir, rollout, ".json")


def commands_dir(data_dir: Path, rollout: str) -> Path:
    return _rollout_path(data_dir, rollout, ".commands")


def lock_path(data_dir: Path, rollout: str) -> Path:
    return _rollout_path(data_dir, rollout, ".lock")


def _write_atomic(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, payload, fsync_parent=True)


def save_state(data_dir: Path, state: GateState) -> GateState:
    """Persist atomically; returns the state with revision+1 and updated_at set by the caller."""
    state = dataclasses.replace(state, revision=state.revision + 1)
    body = json.dumps(state.to_json(), indent=1, sort_keys=True).encode()
    _write_atomic(state_path(data_dir, state.rollout), body)
    return state


def load_state(data_dir: Path, rollout: str) -> GateState | None:
    """The persisted state, or None when this rollout never ran here."""
    path = state_path(data_dir, rollout)
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise GateStateError(str(path), f"cannot read: {exc.strerror}") from None
    try:
        return GateState.from_json(json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise GateStateError(str(path), f"not a gate state: {exc}") from None


def list_states(data_dir: Path) -> list[GateState]:
    """Every rollout's state (unreadable files are skipped: metrics must never fail)."""
    out: list[GateState] = []
    root = gate_dir(data_dir)
    if not root.is_dir():
        return out
    for path in sorted(root.glob("*.json")):
        try:
            out.append(GateState.from_json(json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return out


# --- commands ------------------------------------------------------------------------------

_SEQ = [0]


def queue_command(
    data_dir: Path, rollout: str, command: str, *, by: str = "cli", reason: str = ""
) -> Path:
    """Queue a manual command for the running gate (or the Flagger rollback hook)."""
    if command not in COMMANDS:
        raise GateStateError(rollout, f"unknown command {command!r}; use {', '.join(COMMANDS)}")
    _SEQ[0] += 1
    name = f"{time.time_ns():020d}-{os.getpid()}-{_SEQ[0]}-{command}.json"
    path = commands_dir(data_dir, rollout) / name
    body = {"command": command, "by": by, "reason": reason, "queued_at": time.time()}
    _write_atomic(path, json.dumps(body).encode())
    return path


def pending_commands(data_dir: Path, rollout: str) -> list[tuple[Path, dict[str, Any]]]:
    """Queued commands, oldest first (bad files are returned as {'command': ''})."""
    root = commands_dir(data_dir, rollout)
    if not root.is_dir():
        return []
    out: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(root.glob("*.json")):
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError):
            body = {"command": ""}
        out.append((path, body if isinstance(body, dict) else {"command": ""}))
    return out


def consume(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@contextlib.contextmanager
def rollout_lock(data_dir: Path, rollout: str) -> Iterator[Path]:
    """Hold the rollout's lock: a second gate for the same rollout fails fast (one controller
    per rollout; Flagger shows what two do to step weights)."""
    path = lock_path(data_dir, rollout)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GateStateError(str(path), "another gate is running this rollout") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield path
    finally:
        os.close(fd)


def is_locked(data_dir: Path, rollout: str) -> bool:
    """True when a gate process holds the rollout's lock right now."""
    path = lock_path(data_dir, rollout)
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops our lock if we got it
    return False
