"""The scoring engine: ``await scorer.score(query, passages, keys) -> list[float]`` for each configured model.

Importing this package stays cheap (no torch): the scorers load lazily on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bridge.scoring.base import (
    ModelConfigError,
    NullObserver,
    QueueFullError,
    Scorer,
    ScoringError,
    ScoringObserver,
)
from bridge.scoring.settings import ModelSettings, RemoteSettings

if TYPE_CHECKING:
    from bridge.scoring.local import LocalScorer
    from bridge.scoring.registry import build_scorer, build_scorers, close_scorers, start_scorers
    from bridge.scoring.remote import RemoteScorer
    from bridge.scoring.semantic import BiEncoderScorer

_LAZY = {
    "BiEncoderScorer": "bridge.scoring.semantic",
    "LocalScorer": "bridge.scoring.local",
    "RemoteScorer": "bridge.scoring.remote",
    "build_scorer": "bridge.scoring.registry",
    "build_scorers": "bridge.scoring.registry",
    "start_scorers": "bridge.scoring.registry",
    "close_scorers": "bridge.scoring.registry",
}

__all__ = [
    "BiEncoderScorer",
    "LocalScorer",
    "ModelConfigError",
    "ModelSettings",
    "NullObserver",
    "QueueFullError",
    "RemoteScorer",
    "RemoteSettings",
    "Scorer",
    "ScoringError",
    "ScoringObserver",
    "build_scorer",
    "build_scorers",
    "close_scorers",
    "start_scorers",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
