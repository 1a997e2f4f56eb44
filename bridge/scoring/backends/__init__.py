"""The backend seam: which engine runs a local cross-encoder's batches (``models.<name>.backend``).

:class:`~bridge.scoring.local.LocalScorer` takes an :data:`EngineFactory` (``(name, settings) -> engine``) and
never names a backend; :func:`engine_factory` picks the one the settings ask for. Every engine tokenises with the
bridge's own :class:`~bridge.scoring.encoder.PairEncoder` (through
:class:`~bridge.scoring.backends.pairs.PairScoring`) and hands the batcher torch-free
:class:`~bridge.scoring.encoder.Encoded` items, so the batcher, the cache and the scorer are the same for all.

* ``torch``: :class:`bridge.scoring.model.CrossEncoderModel` (CPU, CUDA, MPS; bf16/fp16, dynamic int8);
* ``openvino``: :class:`bridge.scoring.backends.openvino_engine.OpenVinoCrossEncoder` (CPU; the model converted
  by ``openvino.convert_model`` once and cached on disk, f32/bf16 by OpenVINO's precision hint).

This module imports neither torch nor openvino: backends load lazily, so importing it stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from bridge.scoring.encoder import Encoded, ShouldStop
from bridge.scoring.precision import PrecisionReport
from bridge.scoring.settings import ModelSettings


class CrossEncoderEngine(Protocol):
    """What the scorer, the bench and the tools use of a loaded cross-encoder, whatever its backend.

    The batcher needs only ``max_batch_tokens``, ``encode``, ``score_batch`` and ``prepare_worker``
    (:class:`~bridge.scoring.batcher.BatchEngine`); the rest is for the scorer's start-up and reports.
    """

    backend: str
    name: str
    settings: ModelSettings
    config: Any
    max_length: int
    max_batch_tokens: int
    workers: int
    threads: int
    precision: PrecisionReport

    def describe(self) -> str: ...

    def encode(
        self, query: str, passages: Sequence[str], should_stop: ShouldStop | None = None
    ) -> list[Encoded]: ...

    def score_batch(self, batch: Sequence[Encoded]) -> list[float]: ...

    def prepare_worker(self) -> None: ...

    def predict(self, query: str, passages: Sequence[str]) -> list[float]: ...

    def close(self) -> None: ...


EngineFactory = Callable[[str, ModelSettings], CrossEncoderEngine]


def load_torch(name: str, settings: ModelSettings) -> CrossEncoderEngine:
    """The torch engine (synchronous: seconds of loading)."""
    from bridge.scoring.model import CrossEncoderModel

    return CrossEncoderModel(name, settings)


def load_openvino(name: str, settings: ModelSettings) -> CrossEncoderEngine:
    """The OpenVINO engine (synchronous: loading, and converting the model on its first start)."""
    from bridge.scoring.backends.openvino_engine import OpenVinoCrossEncoder

    return OpenVinoCrossEncoder(name, settings)


def engine_factory(settings: ModelSettings) -> EngineFactory:
    """The factory for ``settings.backend``."""
    return load_openvino if settings.backend == "openvino" else load_torch
