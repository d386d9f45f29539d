"""Rewrite route weights in a VirtualService YAML file of a GitOps checkout.

Every other byte stays as it was: the file is parsed with ruamel.yaml (round-trip) only to
find where each owned weight's value token sits, and the new numbers are spliced into the
original text at those positions. Comments, quoting, key order, indentation, document markers
and the other documents of the file are untouched. Only when a destination has no `weight` key
yet does the file go through ruamel's round-trip dump (comments and order kept; spacing may be
normalised). The result is parsed again and verified before it atomically replaces the file.
Committing and pushing is left to the GitOps pipeline (or a wrapper script).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from meshlens.analytics.errors import ActuatorError, RolloutConfigError, RouteNotOwned
from meshlens.analytics.gate.config import RolloutConfig
from meshlens.analytics.gate.routes import (
    Ownership,
    check_weights,
    current_canary_weight,
    owned_routes,
    ownership_from_options,
)
from meshlens.durable_file import write_atomic

_NUMBER: Final = re.compile(r"""(['"]?)(\d+)\1""")


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    return y


def _load(text: str, path: str) -> list[Any]:
    try:
        return list(_yaml().load_all(text))
    except YAMLError as exc:
        raise ActuatorError("file", path, f"not valid YAML: {exc}") from None


def find_virtual_service(docs: list[Any], name: str, namespace: str, path: str) -> Any:
    """The one VirtualService document named `name` (and in `namespace`, when given)."""
    hits = []
    for doc in docs:
        if not isinstance(doc, Mapping) or doc.get("kind") != "VirtualService":
            continue
        meta = doc.get("metadata") or {}
        if meta.get("name") != name:
            continue
        if namespace and meta.get("namespace", namespace) != namespace:
            continue
        hits.append(doc)
    if len(hits) != 1:
        raise RouteNotOwned(
            f"{path}",
            f"expected exactly one VirtualService {name!r}"
            f"{' in ' + namespace if namespace else ''}, found {len(hits)}",
        )
    return hits[0]


def rewrite_weights(
    text: str,
    name: str,
    own: Ownership,
    canary_weight: int,
    *,
    namespace: str = "",
    path: str = "<yaml>",
) -> str:
    """The file text with the owned routes of VirtualService `name` at the new weights (pure)."""
    check_weights(100 - canary_weight, canary_weight)
    docs = _load(text, path)
    vs = find_virtual_service(docs, name, namespace, path)
    spec = vs.get("spec") or {}
    target = f"{path}: VirtualService {name}"
    edits: list[tuple[int, int, int]] = []  # (line, col, new value)
    missing = False
    for r in owned_routes(spec, own, target):
        dests = spec[r.kind][r.index]["route"]
        for j, w in ((r.baseline_index, 100 - canary_weight), (r.canary_index, canary_weight)):
            if "weight" in dests[j]:
                line, col = dests[j].lc.value("weight")
                edits.append((line, col, w))
            else:
                missing = True
            dests[j]["weight"] = w
    if missing:
        out = io.StringIO()
        y = _yaml()
        y.explicit_start = text.lstrip().startswith("---")
        y.dump_all(docs, out)
        return out.getvalue()
    lines = text.splitlines(keepends=True)
    for line, col, w in edits:
        src = lines[line]
        m = _NUMBER.match(src, col)
        if not m:
            raise ActuatorError("file", path, f"line {line + 1}: weight is not a plain integer")
        q = m.group(1)
        lines[line] = f"{src[: m.start()]}{q}{w}{q}{src[m.end() :]}"
    return "".join(lines)


def read_canary_weight(
    text: str, name: str, own: Ownership, *, namespace: str = "", path: str = "<yaml>"
) -> int:
    vs = find_virtual_service(_load(text, path), name, namespace, path)
    return current_canary_weight(_plain(vs.get("spec") or {}), own, f"{path}: {name}")


def _plain(value: Any) -> Any:
    """ruamel's round-trip types -> plain dict/list/int/str (quoted '10' stays a string)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    return value


def _write_atomic(path: Path, text: str) -> None:
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644  # keep the file's mode
    write_atomic(path, text, mode=mode)


class FileActuator:
    name = "file"

    def __init__(
        self, path: Path, virtual_service: str, own: Ownership, namespace: str = ""
    ) -> None:
        self.path = path
        self.virtual_service = virtual_service
        self.namespace = namespace
        self.own = own

    @classmethod
    def from_options(cls, opts: Mapping[str, Any], cfg: RolloutConfig) -> FileActuator:
        path = str(opts.get("path") or "")
        vs = str(opts.get("virtualService") or opts.get("virtual_service") or "")
        if not path:
            raise RolloutConfigError(cfg.source, "actuator.path", "is required")
        if not vs:
            raise RolloutConfigError(cfg.source, "actuator.virtualService", "is required")
        own = ownership_from_options(opts, cfg.service, cfg.baseline, cfg.canary)
        base = Path(cfg.source).parent if cfg.source and not Path(path).is_absolute() else Path()
        return cls(base / path, vs, own, str(opts.get("namespace") or ""))

    def set_canary_weight(self, weight: int) -> None:
        try:
            text = self.path.read_text()
        except OSError as exc:
            raise ActuatorError("file", str(self.path), f"cannot read: {exc.strerror}") from None
        new = rewrite_weights(
            text,
            self.virtual_service,
            self.own,
            weight,
            namespace=self.namespace,
            path=str(self.path),
        )
        got = read_canary_weight(
            new, self.virtual_service, self.own, namespace=self.namespace, path=str(self.path)
        )
        if got != weight:
            raise ActuatorError(
                "file",
                str(self.path),
                f"rewritten file has canary weight {got}%, expected {weight}%",
            )
        if new != text:
            _write_atomic(self.path, new)
        if self.current_canary_weight() != weight:
            raise ActuatorError("file", str(self.path), "read back a different weight")

    def current_canary_weight(self) -> int | None:
        return read_canary_weight(
            self.path.read_text(),
            self.virtual_service,
            self.own,
            namespace=self.namespace,
            path=str(self.path),
        )

    def describe(self) -> str:
        return f"file {self.path} VirtualService {self.virtual_service} ({self.own.describe()})"
