"""What every cross-encoder engine shares, whatever runs its forward pass: tokenising, budgets, the output rule.

A backend (:class:`~bridge.scoring.model.CrossEncoderModel` for torch,
:class:`~bridge.scoring.backends.openvino_engine.OpenVinoCrossEncoder`) loads its model its own way and supplies
``logits(batch)``; this mixin turns the tokenizer and config into the same pairs, the same ``max_length`` and
batch budget, and the same activated scores, so two backends score identical inputs and differ only in the
arithmetic of the forward pass (which the precision guard and tests/scoring/test_backend_openvino.py measure).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from transformers.utils import cached_file

from bridge.scoring.activation import OutputRule, load_st_config, resolve_output
from bridge.scoring.collate import Padding
from bridge.scoring.encoder import Encoded, PairEncoder, ShouldStop, Stopped
from bridge.scoring.loading import batch_token_budget, capped_max_length, model_limit, plan_workers
from bridge.scoring.precision import CHECK_PASSAGES, CHECK_QUERY, PrecisionReport, guard_precision
from bridge.scoring.settings import ModelSettings


class PairScoring:
    """Tokenising, batching helpers and the output rule of a cross-encoder; subclasses define :meth:`logits`."""

    name: str
    settings: ModelSettings
    tokenizer: Any
    config: Any
    output: OutputRule
    max_length: int
    max_batch_tokens: int
    padding: Padding
    labels: tuple[str, ...]
    workers: int
    threads: int
    precision: PrecisionReport
    _encoder: PairEncoder

    def _set_up_pairs(
        self, tokenizer: Any, config: Any, *, local_files_only: bool, on_cpu: bool, log: logging.Logger
    ) -> str:
        """Everything that follows from the tokenizer and config (output rule, ``max_length``, batch budget,
        worker layout); returns the worker layout's reason, for the load log line."""
        settings = self.settings
        self.tokenizer, self.config = tokenizer, config
        st_path = cached_file(
            settings.source,
            "config_sentence_transformers.json",
            revision=settings.revision,
            local_files_only=local_files_only,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
        self.output = resolve_output(
            config,
            activation=settings.activation,
            label=settings.label,
            st_config=load_st_config(st_path),
            trust_remote_code=settings.trust_remote_code,
            model=self.name,
        )
        limit = model_limit(tokenizer, config)
        self.max_length = capped_max_length(self.name, settings.max_length, limit, log)
        self.max_batch_tokens = batch_token_budget(settings.max_batch_tokens, on_cpu, self.max_length)
        self.padding = Padding.of(tokenizer)
        self._encoder = PairEncoder(tokenizer, self.max_length, settings, self.padding.token_types)
        self.labels = self.output.labels
        self.workers, self.threads, threads = plan_workers(on_cpu, settings.workers, settings.threads)
        return threads

    def _finish_loading(self, runs_on: str, log: logging.Logger) -> None:
        """The load log line every backend writes (``runs_on``: how its forward pass runs, e.g. ``on cpu``),
        then the precision guard, which needs the finished engine and may switch it to float32."""
        settings = self.settings
        log.info(
            "model %s: loaded %s %s; output %s; max_length %d (%s), batches up to %d padded tokens",
            self.name,
            settings.source,
            runs_on,
            self.output.description,
            self.max_length,
            settings.long_documents,
            self.max_batch_tokens,
        )
        self.precision = guard_precision(
            self, tolerance=settings.precision_tolerance, allow_inexact=settings.allow_inexact, log=log
        )

    def logits(self, batch: Sequence[Encoded]) -> torch.Tensor:
        """Raw logits ``[rows, labels]`` for one batch (float32, on the CPU)."""
        raise NotImplementedError

    # -- the precision guard (bridge.scoring.precision.Checkable): the backend's part, then the check set ------

    def precision_label(self) -> str:
        """The precision the forward pass computes in now (``float32``, ``bfloat16``, ...)."""
        raise NotImplementedError

    def use_float32(self) -> Callable[[bool], None]:
        """Switch to a float32 forward pass until ``finish(keep)`` (the precision guard's reference)."""
        raise NotImplementedError

    def check_scores(self) -> list[float]:
        """The check set's activated scores (sigmoid/softmax applied), as requests get them."""
        return self.predict(CHECK_QUERY, CHECK_PASSAGES)

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
