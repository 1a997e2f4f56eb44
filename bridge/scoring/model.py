"""One Hugging Face cross-encoder in this process: tokenise pairs, run batches, turn logits into scores.

Everything here is synchronous and meant for the scorer's worker thread; the asyncio side lives in
:mod:`bridge.scoring.batcher`. Tokenisation and the forward pass are separate steps so that the batcher can
tokenise each pair once, sort by length and pad each batch only to its own longest pair.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import cached_file

from bridge.scoring.activation import OutputRule, load_st_config, resolve_output
from bridge.scoring.base import ModelConfigError
from bridge.scoring.device import Placement, choose_placement
from bridge.scoring.encoder import Encoded, PairEncoder, ShouldStop, Stopped
from bridge.scoring.settings import ModelSettings

log = logging.getLogger(__name__)

GPU_BATCH_TOKENS = 16384
CPU_BATCH_TOKENS = 4096


def padded_tokens(batch: Sequence[Encoded]) -> int:
    """What a batch costs the model: every row is padded to the longest one."""
    return len(batch) * max((len(item) for item in batch), default=0)


def _model_limit(tokenizer: Any, config: Any) -> int:
    """The longest pair the model takes: the tokenizer's limit capped by the position table (as s-t does)."""
    limit = int(getattr(tokenizer, "model_max_length", 0) or 0)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0 and (limit <= 0 or limit > positions):
        limit = positions
    if limit <= 0 or limit > 1_000_000:
        raise ModelConfigError("the model declares no maximum input length; set max_length")
    return limit


def usable_cores() -> int:
    """Cores this process may run on (containers and taskset often allow fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def plan_workers(on_cpu: bool, workers: int | None, threads: int | None) -> tuple[int, int, str]:
    """Inference threads and torch threads per worker, with the reason.

    On a CPU the default is two workers (when there are two cores or more), each with half the cores: two
    batches in flight keep the cores busy between batches, and each worker's OpenMP team is smaller, which
    matters when other processes compete for the cores (a team waits for its slowest thread after every op).
    One worker on a GPU: batches serialise there anyway and each one holds activation memory.
    """
    cores = usable_cores()
    if not on_cpu:
        count = workers or 1
        return count, threads or torch.get_num_threads(), f"workers {count} (GPU default 1 unless configured)"
    count = workers or (2 if cores >= 2 else 1)
    per_worker = threads or max(1, cores // count)
    origin = "configured" if workers or threads else f"default for {cores} usable cores"
    return count, per_worker, f"workers {count} x {per_worker} torch threads ({origin})"


def _quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantisation of the Linear layers (torch's eager API: deprecated, still the CPU's fastest)."""
    quantize = getattr(getattr(torch, "ao", None), "quantization", None)
    if quantize is None or not hasattr(quantize, "quantize_dynamic"):
        raise ModelConfigError(
            f"quantize: int8 needs torch.ao.quantization, which torch {torch.__version__} lacks"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize.*deprecated", category=UserWarning)
        return quantize.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


class CrossEncoderModel:
    """A sequence-classification model plus its tokenizer, scoring exactly like sentence-transformers.

    Loading is synchronous (seconds); construct it in a worker thread when an event loop is running.
    """

    def __init__(self, name: str, settings: ModelSettings) -> None:
        self.name = name
        self.settings = settings
        self.placement: Placement = choose_placement(settings.device, settings.dtype, settings.quantize)
        for warning in self.placement.warnings:
            log.warning("model %s: %s", name, warning)
        from bridge.scoring.preflight import check_source

        # One line and a few seconds when the source cannot serve the model, not from_pretrained's retries.
        source = check_source(name, settings.source, settings.revision)
        if source.problem is not None:
            raise ModelConfigError(f"model {name}: {source.problem}")
        common: dict[str, Any] = {
            "revision": settings.revision,
            "trust_remote_code": settings.trust_remote_code,
            "local_files_only": source.local_files_only,
        }
        self.tokenizer = AutoTokenizer.from_pretrained(settings.source, **common)
        model = AutoModelForSequenceClassification.from_pretrained(
            settings.source, dtype=self.placement.weights_dtype, **common
        )
        model.eval()
        model.to(self.placement.device)
        if self.placement.quantize_int8:
            model = _quantize_int8(model)
        self.model: Any = model
        self.config = model.config

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

        limit = _model_limit(self.tokenizer, self.config)
        if settings.max_length is not None and settings.max_length > limit:
            log.warning(
                "model %s: max_length %d exceeds the model's %d; using %d",
                name,
                settings.max_length,
                limit,
                limit,
            )
        self.max_length = min(settings.max_length or limit, limit)
        on_cpu = self.placement.device.type == "cpu"
        self.max_batch_tokens = settings.max_batch_tokens or (
            CPU_BATCH_TOKENS if on_cpu else GPU_BATCH_TOKENS
        )
        if self.max_batch_tokens < self.max_length:
            # A single longest pair must always fit in one batch.
            self.max_batch_tokens = self.max_length

        self._uses_token_types = "token_type_ids" in getattr(self.tokenizer, "model_input_names", ())
        pad_id = self.tokenizer.pad_token_id
        self._pad_id = int(pad_id) if pad_id is not None else 0
        self._pad_left = getattr(self.tokenizer, "padding_side", "right") == "left"
        self._encoder = PairEncoder(self.tokenizer, self.max_length, settings, self._uses_token_types)
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

    def _collate(self, batch: Sequence[Encoded]) -> dict[str, torch.Tensor]:
        rows, width = len(batch), max(len(item) for item in batch)
        ids = np.full((rows, width), self._pad_id, dtype=np.int64)
        mask = np.zeros((rows, width), dtype=np.int64)
        types = np.zeros((rows, width), dtype=np.int64) if self._uses_token_types else None
        for row, item in enumerate(batch):
            n = len(item)
            span = slice(width - n, width) if self._pad_left else slice(0, n)
            ids[row, span] = item.input_ids
            mask[row, span] = 1
            if types is not None and item.token_type_ids is not None:
                types[row, span] = item.token_type_ids
        device = self.placement.device
        non_blocking = device.type == "cuda"
        features = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if types is not None:
            features["token_type_ids"] = torch.from_numpy(types)
        if device.type != "cpu":
            features = {
                k: v.pin_memory().to(device, non_blocking=non_blocking) if non_blocking else v.to(device)
                for k, v in features.items()
            }
        return features

    @contextlib.contextmanager
    def _precision(self) -> Iterator[None]:
        if self.placement.autocast is not None:
            with torch.autocast(self.placement.device.type, dtype=self.placement.autocast):
                yield
        else:
            yield

    def logits(self, batch: Sequence[Encoded]) -> torch.Tensor:
        """Raw logits ``[rows, labels]`` for one batch (float32, on the CPU)."""
        features = self._collate(batch)
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
