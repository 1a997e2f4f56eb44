"""Matching a request's index expression against the configured rules, in order."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from bridge.config import RuleSettings

# Engine-internal indices: reranking them would break Dashboards, security and task bookkeeping.
SYSTEM_PREFIXES = (".kibana", ".opensearch", ".opendistro", ".security", ".tasks")


def index_names(expression: str | None) -> list[str]:
    """The names in an index expression; cluster-wide search is ``_all``. Exclusions (``-name``) are dropped."""
    if expression is None or expression.strip() in ("", "_all", "*"):
        return ["_all"] if expression is None or expression.strip() != "*" else ["*"]
    names = [name.strip() for name in expression.split(",") if name.strip()]
    return [name for name in names if not name.startswith("-")] or ["_all"]


def is_system(name: str) -> bool:
    bare = name.split(":", 1)[-1]
    return bare.startswith(SYSTEM_PREFIXES)


def touches_system(expression: str | None) -> bool:
    return any(is_system(name) for name in index_names(expression))


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(name == pattern or fnmatchcase(name, pattern) for pattern in patterns)


def match_rule(expression: str | None, rules: Sequence[RuleSettings]) -> RuleSettings | None:
    """The first rule that covers every index named in the expression; None when no rule does."""
    names = index_names(expression)
    for rule in rules:
        if all(_matches(name, rule.indices) for name in names):
            return rule
    return None
