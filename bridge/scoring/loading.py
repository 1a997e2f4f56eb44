"""What loading any local model (cross-encoder or bi-encoder) starts and ends with, in one place.

Where it runs and whether its source can serve it (:func:`open_source`), how long its inputs may be and how
large its batches (:func:`capped_max_length`, :func:`batch_token_budget`), how many workers run it, and int8.
Synchronous, for the thread that loads the model.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bridge.scoring.base import ModelConfigError
from bridge.scoring.device import Placement, choose_placement
from bridge.scoring.precision import Int8Scheme
from bridge.scoring.settings import ModelSettings

GPU_BATCH_TOKENS = 16384
CPU_BATCH_TOKENS = 4096


@dataclass(frozen=True)
class ModelSource:
    """A model's placement, and how ``from_pretrained`` must read its source."""

    placement: Placement
    local_files_only: bool

    def pretrained_options(self, settings: ModelSettings) -> dict[str, Any]:
        """The keyword arguments every ``from_pretrained`` of this model takes."""
        return {
            "revision": settings.revision,
            "trust_remote_code": settings.trust_remote_code,
            "local_files_only": self.local_files_only,
        }


def open_source(name: str, settings: ModelSettings, log: logging.Logger) -> ModelSource:
    """Choose the device and dtype (logging their warnings) and check the source can serve the model: one line and
    a few seconds when it cannot, not ``from_pretrained``'s retries."""
    placement = choose_placement(
        settings.device, settings.dtype, settings.quantize, int8_reduce_range=settings.int8_reduce_range
    )
    for warning in placement.warnings:
        log.warning("model %s: %s", name, warning)
    from bridge.scoring.preflight import check_source

    source = check_source(name, settings.source, settings.revision)
    if source.problem is not None:
        raise ModelConfigError(f"model {name}: {source.problem}")
    return ModelSource(placement, source.local_files_only)


def capped_max_length(name: str, configured: int | None, limit: int, log: logging.Logger) -> int:
    """``max_length`` as configured, never beyond what the model takes (a warning says when it was)."""
    if configured is not None and configured > limit:
        log.warning("model %s: max_length %d exceeds the model's %d; using %d", name, configured, limit, limit)
    return min(configured or limit, limit)


def batch_token_budget(configured: int | None, on_cpu: bool, max_length: int) -> int:
    """Padded tokens per model call; a single longest input must always fit in one batch."""
    return max(configured or (CPU_BATCH_TOKENS if on_cpu else GPU_BATCH_TOKENS), max_length)


def model_limit(tokenizer: Any, config: Any) -> int:
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


class FullRangeDynamicLinear(torch.ao.nn.quantized.dynamic.Linear):
    """torch's dynamic int8 Linear with 8-bit activations: torch's own quantises them to 7 bits
    (``reduce_range=True``) on every CPU, which only kernels without VNNI need."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, reduce_range=False)
        return y.to(x.dtype)


def quantize_int8(model: Any, scheme: Int8Scheme | None = None) -> Any:
    """Dynamic int8 quantisation of the Linear layers (torch's eager API: deprecated, still the CPU's fastest).

    Weights per channel (one scale per output row: measured closer to float32 than one per tensor, and no
    slower). Activations at 7 bits when ``scheme.reduce_range`` (torch's default, needed where int8 kernels
    sum u8 x s8 pairs into int16), else at 8 bits (:func:`~bridge.scoring.precision.choose_int8_scheme`).
    The weights are packed by ``scheme.engine``; torch's global engine setting is restored afterwards (packed
    weights keep the kernels they were packed for).
    """
    quantize = getattr(getattr(torch, "ao", None), "quantization", None)
    if quantize is None or not hasattr(quantize, "quantize_dynamic"):
        raise ModelConfigError(
            f"quantize: int8 needs torch.ao.quantization, which torch {torch.__version__} lacks"
        )
    reduce_range = scheme is None or scheme.reduce_range
    mapping = None if reduce_range else {torch.nn.Linear: FullRangeDynamicLinear}
    engines = torch.backends.quantized
    previous = engines.engine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize.*deprecated", category=UserWarning)
        try:
            if scheme is not None and scheme.engine != previous:
                engines.engine = scheme.engine
            return quantize.quantize_dynamic(
                model, {torch.nn.Linear: quantize.per_channel_dynamic_qconfig}, mapping=mapping
            )
        finally:
            if engines.engine != previous:
                engines.engine = previous


def swap_to_float32(model: Any, auto_class: Any) -> Callable[[bool], None]:
    """Load ``model``'s weights again in float32 (``auto_class.from_pretrained``) on its device and score with
    them; the returned ``finish(keep_float32)`` keeps them, or restores the configured precision and frees them.

    ``model`` is a :class:`~bridge.scoring.model.CrossEncoderModel` or a
    :class:`~bridge.scoring.bi_encoder.BiEncoderModel`: what the precision guard compares against."""
    configured, placement = model.model, model.placement
    reference = auto_class.from_pretrained(model.settings.source, dtype=torch.float32, **model._pretrained)
    reference.eval()
    model.model = reference.to(placement.device)
    model.placement = placement.float32("precision guard: float32")

    def finish(keep_float32: bool) -> None:
        if not keep_float32:
            model.model, model.placement = configured, placement
        if placement.device.type == "cuda":
            torch.cuda.empty_cache()

    return finish
