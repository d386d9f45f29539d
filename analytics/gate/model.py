"""Values the gate passes around: a judgement (what the judge said), a decision (what the gate
does about it) and a transition (new state + decision). Plain frozen data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from meshlens.analytics.gate.state import GateState


@dataclass(frozen=True, slots=True)
class Judgement:
    """The judge's answer for one analysis, reduced to what the gate needs plus the details
    (the judge's full JSON: per-metric results) that go into the verdicts table."""

    verdict: str  # pass | fail | inconclusive
    score: float | None
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_verdict_json(cls, data: dict[str, Any]) -> Judgement:
        verdict = str(data.get("verdict", "inconclusive"))
        if verdict not in ("pass", "fail", "inconclusive"):
            verdict = "inconclusive"
        score = data.get("score")
        return cls(
            verdict,
            None if score is None else float(score),
            str(data.get("reason", "")),
            dict(data),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """What the gate decided. `target_weight` is None when the weights stay as they are."""

    action: str  # start|advance|hold|pause|resume|promote|rollback|none
    target_weight: int | None
    reason: str
    judgement: Judgement | None = None
    command: str = ""


@dataclass(frozen=True, slots=True)
class Transition:
    state: GateState
    decision: Decision
