"""What a check returns: findings (problems, warnings, notes) and the table behind them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["problem", "warning", "info"]


@dataclass(frozen=True, slots=True)
class Finding:
    check: str  # routing | authz | mtls
    severity: Severity
    resource: str  # "VirtualService default/reviews", a workload, or an edge
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "resource": self.resource,
            "message": self.message,
            "details": dict(self.details),
        }


@dataclass(frozen=True, slots=True)
class CheckReport:
    check: str
    window: Mapping[str, Any]
    findings: tuple[Finding, ...]
    rows: tuple[Mapping[str, Any], ...] = ()  # the table behind the findings
    skipped: tuple[str, ...] = ()  # resources of other kinds in the config
    tables: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "problem"]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "ok": self.ok,
            "window": dict(self.window),
            "problems": len(self.problems),
            "findings": [f.to_json() for f in self.findings],
            "rows": [dict(r) for r in self.rows],
            "skipped": list(self.skipped),
            "tables": {k: [dict(r) for r in v] for k, v in self.tables.items()},
        }


def render_text(report: CheckReport, columns: Sequence[str] | None = None) -> str:
    """A human summary: the table, then the findings, then the verdict line."""
    lines: list[str] = []
    rows = [dict(r) for r in report.rows]
    if rows:
        cols = list(columns or rows[0].keys())
        cells = [[str(r.get(c, "")) for c in cols] for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        lines.append("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
        lines.extend(
            "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells
        )
        lines.append("")
    for f in report.findings:
        lines.append(f"{f.severity.upper():8} {f.resource}: {f.message}")
    for s in report.skipped:
        lines.append(f"SKIPPED  {s} (kind not checked)")
    verdict = "OK" if report.ok else f"{len(report.problems)} problem(s)"
    lines.append(f"{report.check}: {verdict}")
    return "\n".join(lines)
