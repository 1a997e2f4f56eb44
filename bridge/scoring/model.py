"""One Hugging Face cross-encoder in this process: tokenise pairs, run batches, turn logits into scores.

Everything here is synchronous and meant for the scorer's worker thread; the asyncio side lives in
:mod:`bridge.scoring.batcher`. Tokenisation and the forward pass are separate steps so that the batcher can
tokenise each pair once, sort by length and pad each batch only to its own longest pair.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import cached_file

from bridge.scoring.activation import OutputRule, load_st_config, resolve_output
from bridge.scoring.collate import Padding, collate
from bridge.scoring.device import Placement
from bridge.scoring.encoder import Encoded, PairEncoder, ShouldStop, Stopped
from bridge.scoring.loading import (
    batch_token_budget,
    capped_max_length,
    model_limit,
    open_source,
    plan_workers,
    quantize_int8,
    swap_to_float32,
)
from bridge.scoring.precision import CHECK_PASSAGES, CHECK_QUERY, PrecisionReport, guard_precision
from bridge.scoring.settings import ModelSettings

log = logging.getLogger(__name__)


def padded_tokens(batch: Sequence[Encoded]) -> int:
    """What a batch costs the model: every row is padded to the longest one."""
    return len(batch) * max((len(item) for item in batch), default=0)


class CrossEncoderModel:
    """A sequence-classification model plus its tokenizer, scoring exactly like sentence-transformers.

    Loading is synchronous (seconds); construct it in a worker thread when an event loop is running.
    """

    def __init__(self, name: str, settings: ModelSettings) -> None:
        self.name = name
        self.settings = settings
        source = open_source(name, settings, log)
        self.placement: Placement = source.placement
        common = source.pretrained_options(settings)
        self.tokenizer = AutoTokenizer.from_pretrained(settings.source, **common)
        model = AutoModelForSequenceClassification.from_pretrained(
            settings.source, dtype=self.placement.weights_dtype, **common
        )
        model.eval()
        model.to(self.placement.device)
        if self.placement.quantize_int8:
            model = quantize_int8(model, self.placement.int8)
        self.model: Any = model
        self.config = model.config
        self._pretrained = common

        st_path = cached_file(
            settings.source,
            "config_sentence_transformers.json",
            revision=settings.revision,
            local_files_only=source.local_files_only,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
        self.output: OutputRule = resolve_output(
            self.config,
            activation=settings.activation,
            label=settings.label,
            st_config=load_st_config(st_path),
            trust_remote_code=settings.trust_remote_code,
            model=name,
        )

        limit = model_limit(self.tokenizer, self.config)
        self.max_length = capped_max_length(name, settings.max_length, limit, log)
        on_cpu = self.placement.device.type == "cpu"
        self.max_batch_tokens = batch_token_budget(settings.max_batch_tokens, on_cpu, self.max_length)

        self.padding = Padding.of(self.tokenizer)
        self._encoder = PairEncoder(self.tokenizer, self.max_length, settings, self.padding.token_types)
        self.labels = self.output.labels

        self.workers, self.threads, threads = plan_workers(on_cpu, settings.workers, settings.threads)
        for reason in self.placement.reasons:
            log.info("model %s: %s", name, reason)
        log.info("model %s: %s", name, threads)
        log.info(
            "model %s: loaded %s on %s; output %s; max_length %d (%s), batches up to %d padded tokens",
            name,
            settings.source,
            self.placement.describe(),
            self.output.description,
            self.max_length,
            settings.long_documents,
            self.max_batch_tokens,
        )
        self.precision: PrecisionReport = guard_precision(
            self, tolerance=settings.precision_tolerance, allow_inexact=settings.allow_inexact, log=log
        )

    # -- the precision guard (bridge.scoring.precision.Checkable) ------------------------------------------

    def precision_label(self) -> str:
        return self.placement.label

    def check_scores(self) -> list[float]:
        """The check set's activated scores (sigmoid/softmax applied), as requests get them."""
        return self.predict(CHECK_QUERY, CHECK_PASSAGES)

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

    # -- tokenisation ------------------------------------------------------------------------------------

    def encode(
        self, query: str, passages: Sequence[str], should_stop: ShouldStop | None = None
    ) -> list[Encoded]:
        """Tokenise each pair once, at a cost bounded by the model's budget (see :mod:`bridge.scoring.encoder`);
        in ``chunk`` mode a long passage yields several windows. An empty list when ``should_stop`` turned true.
        """
        try:
            return self._encoder.encode(query, passages, should_stop)
        except Stopped:
            return []

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

    def score_batch(self, batch: Sequence[Encoded]) -> list[float]:
        """One score per item, the configured activation and label applied."""
        scores: list[float] = self.output.scores(self.logits(batch)).tolist()
        return scores

    # -- synchronous convenience (warm-up, tools, tests) ---------------------------------------------------

    def _batches(self, items: list[Encoded]) -> Iterator[list[Encoded]]:
        order = sorted(items, key=len)
        batch: list[Encoded] = []
        for item in order:
            if batch and (len(batch) + 1) * len(item) > self.max_batch_tokens:
                yield batch
                batch = []
            batch.append(item)
        if batch:
            yield batch

    def predict(self, query: str, passages: Sequence[str]) -> list[float]:
        """Scores for one query's passages, blocking; long passages by their best window when chunking."""
        best = [float("-inf")] * len(passages)
        for batch in self._batches(self.encode(query, passages)):
            for item, score in zip(batch, self.score_batch(batch), strict=True):
                best[item.passage] = max(best[item.passage], score)
        return best

    def probabilities(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        """Every label's output per pair, ``[pairs, labels]`` (softmax probabilities for NLI models)."""
        rows = []
        for index, (query, passage) in enumerate(pairs):
            item = self.encode(query, [passage])[0]
            rows.append(Encoded(index, item.input_ids, item.token_type_ids))
        out = torch.empty((len(pairs), len(self.labels)))
        for batch in self._batches(rows):
            out[[item.passage for item in batch]] = self.output.probabilities(self.logits(batch))
        return out

    def close(self) -> None:
        """Drop the weights (and the GPU memory they hold)."""
        self.model = None
        if self.placement.device.type == "cuda":
            torch.cuda.empty_cache()
