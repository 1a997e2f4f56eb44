"""Building and running the configured models (``models.<name>``), each picked by name by rules or requests."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from bridge.scoring.base import NullObserver, Scorer, ScoringObserver
from bridge.scoring.local import LocalScorer
from bridge.scoring.remote import RemoteScorer
from bridge.scoring.semantic import BiEncoderScorer
from bridge.scoring.settings import ModelSettings

log = logging.getLogger(__name__)


def build_scorer(name: str, settings: ModelSettings, observer: ScoringObserver | None = None) -> Scorer:
    """A :class:`BiEncoderScorer` for ``kind: bi-encoder``, a :class:`RemoteScorer` when the model has a
    ``remote`` section, else a :class:`LocalScorer` (an in-process cross-encoder)."""
    if settings.kind == "bi-encoder":
        return BiEncoderScorer(name, settings, observer)
    if settings.remote is not None:
        return RemoteScorer(name, settings, observer)
    return LocalScorer(name, settings, observer)


def build_scorers(
    models: Mapping[str, ModelSettings], observer: ScoringObserver | None = None
) -> dict[str, Scorer]:
    """One scorer per configured model; nothing is loaded until :func:`start_scorers`."""
    shared = observer or NullObserver()
    return {name: build_scorer(name, settings, shared) for name, settings in models.items()}


async def start_scorers(scorers: Mapping[str, Scorer]) -> None:
    """Start (load and warm up) every scorer; if one fails, close those already started and re-raise."""
    started: list[Scorer] = []
    try:
        for scorer in scorers.values():
            await scorer.start()
            started.append(scorer)
    except BaseException:
        await close_scorers({scorer.name: scorer for scorer in started})
        raise


async def close_scorers(scorers: Mapping[str, Scorer]) -> None:
    """Close every scorer, logging (not raising) individual failures so the rest still close."""
    for name, scorer in scorers.items():
        try:
            await scorer.close()
        except Exception:
            log.exception("scorer %s: close failed", name)
