"""How the model's and the engine's scores make one order: chosen once per plan, pure, no I/O.

Each window hit has the model's score and the engine's ``_score`` (None when the engine gave none: a sort, a
``null``). The strategy turns them into one final score per hit; :func:`rank` then applies the cutoffs.

- ``replace``: the model's score.
- ``linear``: ``alpha · norm(model) + (1 - alpha) · norm(engine)``. ``min_max`` maps the window onto [0, 1]
  (all scores equal: every hit gets 1, as OpenSearch's min-max normaliser does, so that signal only stops
  deciding); ``z_score`` is ``(s - mean) / stddev`` over the window (all equal: every hit gets 0); ``none``
  takes both raw, for a model that already answers a probability and an engine score of a known range.
- ``rrf``: ``1 / (k + engine rank) + 1 / (k + model rank)``, ranks 1-based as in Elasticsearch's and
  OpenSearch's RRF. The engine's rank is the hit's position in its answer; the model's rank breaks ties by the
  engine's order.

A hit without an engine score counts as the window's lowest engine score (Elasticsearch's linear retriever
gives a missing score 0 after min-max, the same thing); when no hit has one, the engine adds nothing.
``score_transform: positive`` applies Elastic's text_similarity_reranker normalisation
``max(s, 0) + min(exp(s), 1)`` to the model score before any of this: negative logits land in (0, 1), the rest
in [1, ∞), the order unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bridge.config import RuleSettings

Normalization = Literal["min_max", "z_score", "none"]


class Combiner(Protocol):
    """One final score per window hit, from the model's scores and the engine's."""

    @property
    def name(self) -> str:
        """What ``X-Rerank`` calls it: ``combine=<name>``."""

    def combine(self, model: Sequence[float], engine: Sequence[float | None]) -> list[float]: ...


@dataclass(frozen=True)
class Replace:
    name: str = field(default="replace", init=False)

    def combine(self, model: Sequence[float], engine: Sequence[float | None]) -> list[float]:
        return [float(score) for score in model]


@dataclass(frozen=True)
class Linear:
    alpha: float
    normalization: Normalization
    name: str = field(default="linear", init=False)

    def combine(self, model: Sequence[float], engine: Sequence[float | None]) -> list[float]:
        ours = normalize(model, self.normalization)
        present = [score for score in engine if score is not None]
        if not present:
            return [self.alpha * score for score in ours]
        lowest = min(present)
        theirs = normalize([lowest if score is None else score for score in engine], self.normalization)
        return [self.alpha * m + (1 - self.alpha) * e for m, e in zip(ours, theirs, strict=True)]


@dataclass(frozen=True)
class ReciprocalRank:
    rank_constant: int
    name: str = field(default="rrf", init=False)

    def combine(self, model: Sequence[float], engine: Sequence[float | None]) -> list[float]:
        k = self.rank_constant
        by_model = sorted(range(len(model)), key=lambda i: -model[i])  # stable: ties keep the engine's order
        model_rank = {hit: rank for rank, hit in enumerate(by_model, start=1)}
        # The engine's rank is the hit's place in the engine's answer (1-based), whether it has a score or not.
        return [1 / (k + i + 1) + 1 / (k + model_rank[i]) for i in range(len(engine))]


def normalize(scores: Sequence[float], how: Normalization) -> list[float]:
    """The window's scores on one scale; see the module docstring for equal scores."""
    values = [float(score) for score in scores]
    if how == "none" or not values:
        return values
    if how == "min_max":
        low, high = min(values), max(values)
        if high - low <= 0:
            return [1.0] * len(values)
        return [(value - low) / (high - low) for value in values]
    mean = math.fsum(values) / len(values)
    spread = math.sqrt(math.fsum((value - mean) ** 2 for value in values) / len(values))
    if spread <= 0:
        return [0.0] * len(values)
    return [(value - mean) / spread for value in values]


def positive(score: float) -> float:
    """Elastic's text_similarity_reranker normalisation: ``max(s, 0) + min(exp(s), 1)``.

    ``min(exp(s), 1)`` is written ``exp(min(s, 0))``, which never overflows on a large logit."""
    return max(score, 0.0) + math.exp(min(score, 0.0))


@dataclass(frozen=True)
class Ranking:
    """The window's new order, and what happened to every hit of it (indices into the window)."""

    reranked: list[int]
    """Best first, by final score; these carry their final score."""
    unranked: list[int]
    """Past ``top_n``: kept after the reranked ones in the engine's order, with the engine's score."""
    cut: list[int]
    """Below ``min_score``: left out of the answer."""
    scores: list[float]
    """The final score of every window hit, cut or not."""


@dataclass(frozen=True)
class Fusion:
    """The whole rule for ordering one plan's window: transform, combination, cutoffs."""

    combiner: Combiner
    score_transform: Literal["none", "positive"] = "none"
    min_score: float | None = None
    top_n: int | None = None

    @property
    def name(self) -> str:
        return self.combiner.name

    def rank(self, model: Sequence[float], engine: Sequence[float | None]) -> Ranking:
        """Order the window: ties keep the engine's order; ``min_score`` applies first, then ``top_n``."""
        if len(model) != len(engine):
            raise ValueError(f"{len(model)} model scores for {len(engine)} hits")
        transformed = [positive(s) for s in model] if self.score_transform == "positive" else list(model)
        final = self.combiner.combine(transformed, engine)
        order = sorted(range(len(final)), key=lambda i: -final[i])
        floor = self.min_score
        cut = [i for i in order if floor is not None and final[i] < floor]
        kept = [i for i in order if floor is None or final[i] >= floor]
        if self.top_n is None or self.top_n >= len(kept):
            return Ranking(kept, [], sorted(cut), final)
        return Ranking(kept[: self.top_n], sorted(kept[self.top_n :]), sorted(cut), final)


def choose(rule: RuleSettings) -> Fusion:
    """The strategy of one plan's effective rule, chosen once."""
    combiner: Combiner
    if rule.combine == "linear":
        combiner = Linear(rule.alpha, rule.normalization)
    elif rule.combine == "rrf":
        combiner = ReciprocalRank(rule.rank_constant)
    else:
        combiner = Replace()
    return Fusion(combiner, rule.score_transform, rule.min_score, rule.top_n)
