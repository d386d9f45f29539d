"""YAML parsing with a budget, for text from outside (API requests, config files).

Aliases let a few KB expand to millions of objects when the document is walked (the "billion
laughs"): the composed node graph is checked before anything walks it, counting every node as
often as aliases repeat it. Recursive aliases, too many aliases and too deep nesting are refused
as well. Refusals are yaml.YAMLError subclasses, so callers that report invalid YAML report them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import yaml

# libyaml's composer is not recursive in Python (deep nesting cannot overflow the stack) and
# is ~10x faster; the pure-Python loader is the fallback when PyYAML was built without it.
_LOADER: Final[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class YamlLimits:
    max_nodes: int  # scalars + mappings + sequences after alias expansion, per document
    max_aliases: int  # alias uses per document
    max_depth: int  # nesting, after alias expansion


# Operator files (rollout.yaml, canary configs, `meshlens check -f` of a whole cluster export).
FILE_LIMITS: Final = YamlLimits(max_nodes=5_000_000, max_aliases=10_000, max_depth=200)
# API request bodies: ample for hand-written or exported Istio resources (a 1 MiB export is
# ~100k nodes), small enough that walking it takes well under a second.
API_LIMITS: Final = YamlLimits(max_nodes=250_000, max_aliases=100, max_depth=100)


class YamlBudgetError(yaml.YAMLError):
    """The document is refused before it is expanded. Here, not in analytics/errors.py: it must
    be a yaml.YAMLError so every `except yaml.YAMLError` reports it as invalid input."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        where = f" (document starting at line {line})" if line else ""
        super().__init__(f"{reason}{where}")
        self.reason = reason


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def check_budget(root: yaml.Node, limits: YamlLimits) -> None:
    """Raise YamlBudgetError when `root` expands beyond `limits`. Iterative: a deep document
    cannot overflow the stack here. Nodes are visited once (memoized by identity), so the check
    costs the size of the text, not of the expansion."""
    line = root.start_mark.line + 1 if root.start_mark else None
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    refs: dict[int, int] = {}
    aliases = 0
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        key = id(node)
        kids = _children(node)
        if leaving:
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[key] > limits.max_nodes:
                raise YamlBudgetError(
                    f"document expands to more than {limits.max_nodes} nodes "
                    "(aliases repeating large anchors?)",
                    line,
                )
            if depth[key] > limits.max_depth:
                raise YamlBudgetError(f"nesting deeper than {limits.max_depth} levels", line)
            continue
        if key in size:
            continue  # an alias to a node already measured
        if key in depth:  # entered, not left: we are inside it
            raise YamlBudgetError("recursive alias (an anchor used inside itself)", line)
        depth[key] = 0
        stack.append((node, True))
        for kid in reversed(kids):
            refs[id(kid)] = refs.get(id(kid), 0) + 1
            if refs[id(kid)] > 1:
                aliases += 1
                if aliases > limits.max_aliases:
                    raise YamlBudgetError(
                        f"more than {limits.max_aliases} aliases (*name references)", line
                    )
            stack.append((kid, False))


def load_all(text: str, limits: YamlLimits = FILE_LIMITS) -> list[Any]:
    """Every document of `text` (like yaml.safe_load_all), each checked before construction."""
    loader = _LOADER(text)
    docs: list[Any] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            check_budget(node, limits)
            docs.append(loader.construct_document(node))
    except RecursionError:  # the pure-Python composer on deep nesting
        raise YamlBudgetError(f"nesting deeper than {limits.max_depth} levels") from None
    finally:
        loader.dispose()
    return docs


def load(text: str, limits: YamlLimits = FILE_LIMITS) -> Any:
    """The single document of `text` (None when empty), like yaml.safe_load."""
    docs = load_all(text, limits)
    if len(docs) > 1:
        raise YamlBudgetError("expected one YAML document, found several")
    return docs[0] if docs else None
