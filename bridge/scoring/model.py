"""The torch backend: one Hugging Face cross-encoder in this process, scoring exactly like sentence-transformers.

Everything here is synchronous and meant for the scorer's worker thread; the asyncio side lives in
:mod:`bridge.scoring.batcher`. Tokenisation and the forward pass are separate steps so that the batcher can
tokenise each pair once, sort by length and pad each batch only to its own longest pair. What every backend
shares (tokenising, budgets, the output rule) is :class:`~bridge.scoring.backends.pairs.PairScoring`; which
backend a model gets is :func:`bridge.scoring.backends.engine_factory`'s choice.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from bridge.scoring.backends.pairs import PairScoring
from bridge.scoring.collate import collate
from bridge.scoring.device import Placement
from bridge.scoring.encoder import Encoded, padded_tokens
from bridge.scoring.loading import open_source, quantize_int8, swap_to_float32
from bridge.scoring.settings import ModelSettings

__all__ = ["CrossEncoderModel", "Encoded", "padded_tokens"]  # Encoded, padded_tokens: kept for old imports

log = logging.getLogger(__name__)


class CrossEncoderModel(PairScoring):
    """A sequence-classification model plus its tokenizer, run by torch.

    Loading is synchronous (seconds); construct it in a worker thread when an event loop is running.
    """

    backend = "torch"

    def __init__(self, name: str, settings: ModelSettings) -> None:
        self.name = name
        self.settings = settings
        source = open_source(name, settings, log)
        self.placement: Placement = source.placement
        common = source.pretrained_options(settings)
        tokenizer = AutoTokenizer.from_pretrained(settings.source, **common)
        model = AutoModelForSequenceClassification.from_pretrained(
            settings.source, dtype=self.placement.weights_dtype, **common
        )
        model.eval()
        model.to(self.placement.device)
        if self.placement.quantize_int8:
            model = quantize_int8(model, self.placement.int8)
        self.model: Any = model
        self._pretrained = common
        threads = self._set_up_pairs(
            tokenizer,
            model.config,
            local_files_only=source.local_files_only,
            on_cpu=self.placement.device.type == "cpu",
            log=log,
        )
        for reason in self.placement.reasons:
            log.info("model %s: %s", name, reason)
        log.info("model %s: %s", name, threads)
        self._finish_loading(f"on {self.placement.describe()}", log)

    def describe(self) -> str:
        """Backend, device and precision, for logs and the bench."""
        return f"torch on {self.placement.describe()}"

    # -- the precision guard (bridge.scoring.precision.Checkable) ------------------------------------------

    def precision_label(self) -> str:
        return self.placement.label

    def use_float32(self) -> Callable[[bool], None]:
        """Score with float32 weights until ``finish(keep)`` (the precision guard's reference)."""
        return swap_to_float32(self, AutoModelForSequenceClassification)

    def prepare_worker(self) -> None:
        """Per worker thread: size its torch thread team (OpenMP settings are per thread) and, with ``warmup``,
        run one tiny batch so the thread's pools and kernels exist before the first request."""
        if self.placement.device.type == "cpu":
            torch.set_num_threads(self.threads)
        if self.settings.warmup:
            self.predict("warm-up", ["a short passage", "a slightly longer passage to warm up with"])

    # -- inference ---------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _precision(self) -> Iterator[None]:
        if self.placement.autocast is not None:
            with torch.autocast(self.placement.device.type, dtype=self.placement.autocast):
                yield
        else:
            yield

    def logits(self, batch: Sequence[Encoded]) -> torch.Tensor:
        """Raw logits ``[rows, labels]`` for one batch (float32, on the CPU)."""
        features = collate(batch, self.padding, self.placement.device)
        try:
            with torch.inference_mode(), self._precision():
                out = self.model(**features).logits
            return out.float().cpu()
        except torch.cuda.OutOfMemoryError:
            # Leave the allocator clean so the next (maybe smaller) batch can still run.
            torch.cuda.empty_cache()
            raise

    def close(self) -> None:
        """Drop the weights (and the GPU memory they hold)."""
        self.model = None
        if self.placement.device.type == "cuda":
            torch.cuda.empty_cache()
