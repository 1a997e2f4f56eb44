"""Which int8 scheme a CPU gets, and the start-up guard that every non-float32 model must pass.

Two decisions live here, both pure functions of what they are given:

* :func:`choose_int8_scheme`: the quantisation engine and the activations' range, from the CPU's feature flags.
  Without VNNI (AVX2, AVX-512F alone) the int8 kernels sum pairs of u8 x s8 products into int16
  (``vpmaddubsw``), which saturates when 8-bit activations meet large weights; 7-bit activations
  (``reduce_range``, what torch's dynamic ``Linear`` always does) keep every pair sum inside int16. With VNNI
  or AMX the products accumulate in int32, nothing saturates, and the 8th bit is pure accuracy (max |delta| of
  the shared MiniLM cross-encoder 0.095 instead of 0.28 on an AMX Xeon).
* :func:`judge`: whether a model's scores in its precision stay within ``precision_tolerance`` of float32 on a
  fixed check set (:data:`CHECK_QUERY`, :data:`CHECK_PASSAGES`), and keep the top-10 order.

:func:`guard_precision` runs the check on a loaded model (:class:`Checkable`) and applies the verdict: keep the
precision, keep it with a warning (``allow_inexact``), or fall back to float32 on the same device. No torch import
here: the server reads :class:`PrecisionReport` without loading the scoring engine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

# Flags (as /proc/cpuinfo spells them) whose int8 dot products accumulate in int32 without saturating.
VNNI_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
_X86_FLAGS = frozenset(
    ("sse2", "sse4_2", "avx", "avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", *VNNI_FLAGS)
)
TOP_K = 10
ORDER_TIE = 1e-3

CHECK_QUERY = "how many people live in berlin"
# The warm-up passages plus a dozen more, short to long, relevant to barely related: enough to compare a top 10.
CHECK_PASSAGES = (
    "Warm-up runs one small batch at start.",
    "The first request should not pay for lazy initialisation of kernels, thread pools and caches, "
    "so the scorer runs a small batch of pairs of different lengths before it takes traffic.",
    "Berlin had a population of 3,520,031 registered inhabitants in an area of 891.82 square kilometers.",
    "Berlin is well known for its museums.",
    "About 3.7 million people live in Berlin, the most populous city of the European Union by population "
    "within city limits; the wider metropolitan region is home to some six million inhabitants.",
    "Paris is the capital of France; its population was estimated at 2.1 million residents in 2023.",
    "A man is eating pizza.",
    "The city's population grew rapidly in the nineteenth century as industry drew workers from the "
    "countryside, and by 1920 the Greater Berlin Act had made it one of the largest cities in the world "
    "by area and by the number of people who lived there.",
    "Shock waves form when a flow exceeds the speed of sound; the boundary layer then separates and the "
    "pressure on the aircraft wing changes abruptly, which engineers study with wind tunnels and models.",
    "berlin",
    "The weather is lovely today and it is sunny outside.",
    "Population statistics: registered inhabitants are counted by the city's registration offices every "
    "year; people who live in the city without registering are not included in the official figure, "
    "which is why estimates of how many people actually live there vary by several percent.",
    "A search engine returns documents for a query; a reranker then scores each query and passage pair "
    "to decide which relevant passage comes first.",
    "Berlin, Germany's capital, dates to the 13th century. Reminders of the city's turbulent 20th-century "
    "history include its Holocaust memorial and the Berlin Wall's graffitied remains. Divided during the "
    "Cold War, its 18th-century Brandenburg Gate has become a symbol of reunification. The city is also "
    "known for its art scene and modern landmarks like the gold-colored, swoop-roofed Berliner "
    "Philharmonie, built in 1963, and home to some 3.8 million people.",
)


@dataclass(frozen=True)
class Int8Scheme:
    """How ``quantize: int8`` quantises the Linear layers on this CPU, and why."""

    engine: str
    reduce_range: bool
    reason: str

    @property
    def label(self) -> str:
        return "int8 (reduce_range)" if self.reduce_range else "int8"


def choose_int8_scheme(
    flags: Collection[str], engines: Collection[str], reduce_range: bool | None = None
) -> Int8Scheme:
    """The engine (from torch's ``supported_engines``) and activation range for a CPU with these feature flags.

    Follows torch's own per-engine qconfigs (``torch.ao.quantization.get_default_qconfig``: reduce_range for
    fbgemm/x86, "sometimes required to avoid instruction overflow"; full range for onednn, with a warning on
    CPUs without VNNI, and for qnnpack), decided by the CPU rather than the engine: x86 with VNNI/AMX gets 8-bit
    activations, x86 without (AVX2, AVX-512F alone) 7-bit, other CPUs (ARM, qnnpack) 8-bit. The engine is
    ``x86`` (torch's default on x86; fbgemm kernels for Linear), fbgemm when a build lacks it.
    ``reduce_range`` (the ``int8_reduce_range`` setting) overrides the CPU's choice.
    """
    found = sorted(flag for flag in VNNI_FLAGS if flag in flags)
    if reduce_range is not None:
        scheme = choose_int8_scheme(flags, engines)
        bits = "reduce_range (7-bit activations)" if reduce_range else "8-bit activations"
        return Int8Scheme(scheme.engine, reduce_range, f"int8 engine {scheme.engine}, {bits}: configured")
    if not _X86_FLAGS.intersection(flags):
        engine = "qnnpack" if "qnnpack" in engines else _first(engines)
        return Int8Scheme(engine, False, f"int8 engine {engine}, 8-bit activations: not an x86 CPU")
    engine = "x86" if "x86" in engines else "fbgemm" if "fbgemm" in engines else _first(engines)
    if found:
        return Int8Scheme(
            engine,
            False,
            f"int8 engine {engine}, 8-bit activations: the CPU has {', '.join(found)} "
            "(int8 products accumulate in int32, nothing saturates)",
        )
    return Int8Scheme(
        engine,
        True,
        f"int8 engine {engine}, reduce_range (7-bit activations): the CPU has no VNNI/AMX, and its AVX2 int8 "
        "kernels sum u8 x s8 pairs into int16, which saturates at full range",
    )


def _first(engines: Collection[str]) -> str:
    usable = [engine for engine in engines if engine != "none"]
    return usable[0] if usable else "none"


def precision_label(weights_dtype: str, autocast: str | None, int8: Int8Scheme | None) -> str:
    """The precision scores are computed in: ``int8 (reduce_range)``, ``bfloat16``, ``float32`` ..."""
    if int8 is not None:
        return int8.label
    return autocast or weights_dtype


@dataclass(frozen=True)
class Verdict:
    """How a model's check-set scores compare to float32's."""

    max_abs_delta: float
    order_kept: bool
    within: bool


def order_changed(
    candidate: Sequence[float], reference: Sequence[float], k: int = TOP_K, tie: float = ORDER_TIE
) -> bool:
    """Whether the candidate puts some passage of float32's top ``k`` below one float32 ranks lower.

    Passages whose float32 scores are within ``tie`` of each other count as tied: their order is rounding
    noise (float32 kernels alone move scores by ~1e-5), not a ranking the model expresses.
    """
    best = sorted(range(len(reference)), key=lambda i: -reference[i])[:k]
    return any(
        reference[a] > reference[b] + tie and candidate[a] < candidate[b]
        for a in best
        for b in range(len(reference))
    )


def judge(
    candidate: Sequence[float], reference: Sequence[float], tolerance: float, k: int = TOP_K
) -> Verdict:
    """Within when no score moved by more than ``tolerance`` and the top ``k`` keep their order."""
    if len(candidate) != len(reference) or not reference:
        raise ValueError(f"{len(candidate)} scores against {len(reference)} reference scores")
    delta = max(abs(a - b) for a, b in zip(candidate, reference, strict=True))
    order_kept = not order_changed(candidate, reference, k)
    return Verdict(delta, order_kept, delta <= tolerance and order_kept)


@dataclass(frozen=True)
class PrecisionReport:
    """What ``/_bridge/ready`` and the metrics say about one model's precision."""

    precision: str
    configured: str
    checked: bool
    max_abs_delta: float | None = None
    order_kept: bool | None = None
    fell_back: bool = False
    tolerance: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "configured": self.configured,
            "checked": self.checked,
            "max_abs_delta": self.max_abs_delta,
            "top10_order_kept": self.order_kept,
            "fell_back": self.fell_back,
            "tolerance": self.tolerance,
        }


@runtime_checkable
class ReportsPrecision(Protocol):
    """A scorer that knows its model's precision (None until started; remote scorers do not)."""

    @property
    def precision(self) -> PrecisionReport | None: ...


class Checkable(Protocol):
    """A loaded local model the guard can check: its current precision, check-set scores, a float32 twin."""

    name: str

    def precision_label(self) -> str: ...

    def check_scores(self) -> list[float]:
        """Activated scores (cross-encoder) or similarities (bi-encoder) of the check set, in the current
        precision."""

    def use_float32(self) -> Callable[[bool], None]:
        """Load float32 weights on the same device and switch to them; the returned function ends the switch:
        ``True`` keeps float32 (the configured weights are dropped), ``False`` goes back (float32 dropped)."""


def guard_precision(
    target: Checkable, *, tolerance: float, allow_inexact: bool, log: logging.Logger
) -> PrecisionReport:
    """Check a model that does not run in float32 against float32 and apply the verdict (see the module doc).

    Fails open: a check that cannot run (a float32 copy that does not fit, say) keeps the configured precision
    and says so, unchecked.
    """
    configured = target.precision_label()
    if configured == "float32":
        return PrecisionReport("float32", configured, checked=False)
    try:
        candidate = target.check_scores()
        finish = target.use_float32()
    except Exception as error:  # fail open: the model itself loaded
        return _unchecked(log, target.name, configured, error)
    try:
        reference = target.check_scores()
        verdict = judge(candidate, reference, tolerance)
    except Exception as error:
        finish(False)
        return _unchecked(log, target.name, configured, error)
    if verdict.within:
        finish(False)
        log.info(
            "model %s: %s scores within %.4f of float32 on the check set (max |delta| %.4f, top-%d order kept)",
            target.name,
            configured,
            tolerance,
            verdict.max_abs_delta,
            TOP_K,
        )
        return PrecisionReport(configured, configured, True, verdict.max_abs_delta, True, False, tolerance)
    order = "top-10 order kept" if verdict.order_kept else "top-10 order CHANGED"
    consequence = (
        f"keeping {configured} because allow_inexact is true"
        if allow_inexact
        else "falling back to float32 (set allow_inexact: true to keep it)"
    )
    log.warning(
        "model %s: %s scores differ from float32 by up to %.4f on the check set (tolerance %.4f, %s); %s",
        target.name,
        configured,
        verdict.max_abs_delta,
        tolerance,
        order,
        consequence,
    )
    finish(not allow_inexact)
    used = configured if allow_inexact else "float32"
    return PrecisionReport(
        used, configured, True, verdict.max_abs_delta, verdict.order_kept, not allow_inexact, tolerance
    )


def _unchecked(log: logging.Logger, name: str, configured: str, error: Exception) -> PrecisionReport:
    """Fail open: the model itself loaded, so it keeps its precision, unchecked, with a WARNING saying why."""
    log.warning("model %s: precision check could not run (%r); keeping %s unchecked", name, error, configured)
    return PrecisionReport(configured, configured, checked=False)
