"""Scoring throughput against the hardware limit: the bridge's precisions vs sentence-transformers' backends.

What is measured, in one run, on the same deterministic pairs (``--pairs`` pairs = groups of ``--per-call``
passages of 40-300 words, each group with its own query), each configuration once per round, rounds
interleaved, best round reported (the machine may be shared; all rounds are printed):

* the machine's matmul rate per dtype (``torch.mm`` of ``--matmul-size``² matrices; int8: the bridge's own
  dynamic-int8 ``Linear`` of that size), run by as many threads and torch threads per thread as the bridge's
  scorer uses, at the same time: the most a dense model can get from these cores in that dtype;
* sentence-transformers: ``CrossEncoder.predict(batch_size=32)`` in torch fp32 (fp16 on a GPU, side by side), and
  on a CPU its ``onnx``, ONNX dynamic-int8 (``export_dynamic_quantized_onnx_model``, the CPU's VNNI/AVX-512/AVX2
  config), ``openvino`` (its default precision: bf16 on AMX/AVX512-BF16 CPUs, the "computes" column says which)
  and ``openvino-fp32`` (``INFERENCE_PRECISION_HINT=f32``) backends. Those need optimum, which pins
  transformers < 4.58, so they run in a separate interpreter (``--st-python``, a virtual environment with
  ``sentence-transformers[onnx,openvino]``), driven round by round over a pipe; their exports are cached under
  ``--export-dir``. A backend that cannot load is skipped, with the reason in the table. They get the pairs
  sorted by token length (the favourable order: less padding in their fixed batches of 32);
* the bridge: one ``LocalScorer`` per precision (``--precisions``; fp32, bf16 and int8 on a CPU, fp16 and bf16 on
  a GPU), one caller scoring each group in turn, and with ``--callers`` > 1 as many callers at once, sharing the
  groups round-robin (the same pairs in both cases);
* the bridge with ``backend: openvino`` (``--ov-precisions``, default fp32,bf16 on a CPU; '' skips): the same
  scorer, batcher and tokenising, OpenVINO's forward pass (its export cached under ``--export-dir``), measured
  in the same rounds as the torch rows; :func:`bridge_backend_decision` says whether it beats the bridge's
  torch at equal accuracy;
* with ``--latency`` (default 20,50,100): one caller reranking one query's N passages, per precision: the
  latency a search with a window of N pays on this machine.

Per configuration the table gives pairs/s, tokens per pair (the real token counts after truncation, the same
pairs for everyone), GFLOP per pair (:func:`pair_flops`: the model's matmuls on the real tokens, padding not
counted, so every configuration is charged the same useful work), achieved GFLOP/s, the matmul rate in its
dtype, their ratio, max |score difference| against sentence-transformers torch fp32 and how many queries' top 10
changed. The bridge's precision guard (if the bridge has one) is told ``allow_inexact`` so that the precision asked
for is what is measured; its own start-up verdict is printed. The score cache is off.
The last line of output is one JSON object with every figure and the targets' verdicts (:func:`verdicts`).

    python3 -m venv --system-site-packages /tmp/st-backends
    /tmp/st-backends/bin/pip install "sentence-transformers[onnx,openvino]"   # its own transformers 4.x
    python bench/scoring.py --st-python /tmp/st-backends/bin/python          # CPU, a few minutes
    python bench/scoring.py --device cuda     # fp16/bf16 (SDPA), 1 and 16 callers, s-t fp16 side by side
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.harness import cpu_name  # noqa: E402  (needs REPO on the path when run as a script)

SHARED = REPO.parent / "shared"
DEFAULT_MODELS = [SHARED / "models" / "minilm-l6-ce-v1"]
COLLECTIONS = ["vaswani", "nfcorpus", "cranfield"]
TOLERANCE = 0.02  # max |Δ| on the activated score that counts as "the same scores" (issue 12)
ST_BACKENDS = ("onnx", "onnx-int8", "openvino", "openvino-fp32")

# A fallback vocabulary for machines without the shared collections: common English and IR words.
FALLBACK_WORDS = (
    "the of and to in is was for on that with as by at from this which are be an or it has have were not "
    "their its also more been other can one two first new most may used such into than only some these time "
    "system results data model method information retrieval search query document ranking relevance score "
    "network energy temperature pressure flow wave electron field current voltage magnetic signal frequency "
    "analysis theory measurement effect study patients treatment clinical risk disease cells protein gene "
    "city population river history museum university government language music science research people"
).split()

Group = tuple[str, list[str]]


# -- pure helpers (tested in tests/bench/test_scoring_bench.py) ------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """What the FLOP count needs from a BERT-like config."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    labels: int = 1

    @classmethod
    def from_config(cls, config: Any) -> Shape:
        return cls(
            layers=int(config.num_hidden_layers),
            hidden=int(config.hidden_size),
            intermediate=int(getattr(config, "intermediate_size", 4 * config.hidden_size)),
            heads=int(config.num_attention_heads),
            labels=int(getattr(config, "num_labels", 1) or 1),
        )


def pair_flops(shape: Shape, tokens: int) -> float:
    """Floating-point operations (multiply and add counted separately) of one BERT-like pair of ``tokens`` tokens.

    Per layer and token: Q, K, V and output projections ``4·h²`` multiply-adds, the feed-forward ``2·h·i``; so
    ``2·(4h² + 2hi)·t`` for the dense parts. Attention: scores ``Q·Kᵀ`` are ``t²·d`` multiply-adds per head and
    ``heads·d = h``, the same again for ``scores·V``: ``4·h·t²``. Once per pair: the pooler (``2h²``) and the
    classifier (``2h·labels``). Embedding look-ups, softmax, LayerNorm, GELU and biases are elementwise and not
    counted (under 1 % here). Only real tokens count, not padding: the useful work, the same for every engine.
    """
    h, i, t = shape.hidden, shape.intermediate, tokens
    per_layer = 2 * (4 * h * h + 2 * h * i) * t + 4 * h * t * t
    return float(shape.layers * per_layer + 2 * h * h + 2 * h * shape.labels)


def mean_gflop(shape: Shape, lengths: Sequence[int]) -> float:
    """GFLOP per pair averaged over real lengths (the attention term is quadratic, so not f(mean length))."""
    return sum(pair_flops(shape, n) for n in lengths) / max(len(lengths), 1) / 1e9


def max_abs_diff(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b) or not a:
        return float("nan")
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def top_k_changes(
    reference: Sequence[float], scores: Sequence[float], groups: Sequence[Group], k: int
) -> int:
    """Groups (queries) whose top-``k`` order differs from the reference's: what a user would notice."""
    changed, offset = 0, 0
    for _, passages in groups:
        n = len(passages)
        ref = sorted(range(n), key=lambda j: -reference[offset + j])[:k]
        got = sorted(range(n), key=lambda j: -scores[offset + j])[:k]
        changed += ref != got
        offset += n
    return changed


@dataclass
class Row:
    """One configuration's figures (best round); ``note`` says why a configuration was skipped."""

    name: str
    dtype: str
    rates: list[float] = field(default_factory=list)
    diff: float = float("nan")
    top10_changes: int | None = None
    note: str = ""

    @property
    def best(self) -> float:
        return max(self.rates) if self.rates else float("nan")


def beats_st(rate: float, diff: float, st_rows: Sequence[Row], tolerance: float) -> tuple[bool, str]:
    """Faster than every sentence-transformers configuration at least as accurate as it (or within tolerance).

    "Equal tolerance": a bridge configuration with max |Δ| d competes with every measured s-t configuration
    whose own max |Δ| is at most max(d, tolerance); a less accurate s-t backend does not count against it.
    """
    allowed = max(diff, tolerance) if diff == diff else tolerance
    rivals = [row for row in st_rows if row.rates and (row.diff <= allowed or row.dtype == "reference")]
    if not rivals:
        return False, "no sentence-transformers configuration measured"
    best = max(rivals, key=lambda row: row.best)
    return rate > best.best, f"{rate:.1f} vs {best.name} {best.best:.1f} pairs/s (|Δ| ≤ {allowed:.3g})"


def verdicts(
    device: str,
    bridge: Mapping[str, Row],
    st_rows: Sequence[Row],
    efficiency: Mapping[str, float],
    callers_gain: float | None,
    tolerance: float = TOLERANCE,
) -> dict[str, dict[str, Any]]:
    """The issue-12 targets as ``{name: {"pass": bool | None, "why": str}}`` (``None``: not measured)."""
    out: dict[str, dict[str, Any]] = {}

    def put(name: str, ok: bool | None, why: str) -> None:
        out[name] = {"pass": ok, "why": why}

    for name, row in bridge.items():
        if row.rates:
            ok, why = beats_st(row.best, row.diff, st_rows, tolerance)
            put(f"{name}_beats_best_st", ok, why)
    if device == "cpu":
        fp32 = bridge.get("fp32")
        if fp32 is not None and "fp32" in efficiency:
            ratio = efficiency["fp32"]
            put("fp32_at_80pct_of_matmul", ratio >= 0.8, f"{ratio:.1%} of the fp32 matmul rate")
        int8 = bridge.get("int8")
        if int8 is not None and int8.rates:
            put("int8_within_tolerance", int8.diff <= tolerance, f"max |Δ| {int8.diff:.4f} (≤ {tolerance})")
            if fp32 is not None and fp32.rates:
                gain = int8.best / fp32.best
                put("int8_1.8x_fp32", gain >= 1.8, f"{gain:.2f}x fp32")
    else:
        best = max((row.best for row in bridge.values() if row.rates), default=float("nan"))
        put("gpu_40k_pairs_per_s", best >= 40_000 if best == best else None, f"best {best:.0f} pairs/s")
        st16 = next((row for row in st_rows if row.name == "st torch fp16" and row.rates), None)
        if st16 is not None:
            put("gpu_2x_st_fp16", best >= 2 * st16.best, f"{best / st16.best:.2f}x s-t fp16")
        if callers_gain is not None:
            put("gpu_16_callers_1.3x", callers_gain >= 1.3, f"{callers_gain:.2f}x one caller")
    return out


def backend_decision(bridge: Mapping[str, Row], st_rows: Sequence[Row], tolerance: float = TOLERANCE) -> str:
    """Would an onnx/openvino engine inside the bridge win at equal accuracy? Compared engine to engine.

    The s-t backends run with s-t's own batching (fixed 32, here on length-sorted pairs) and tokenising in the
    timed loop, so their pairs/s is a lower bound of what the same runtime would do inside the bridge's batcher;
    the bridge's torch rows include its batching and queue. If the best runtime row within tolerance is not
    faster than the bridge's best row of the same or better accuracy, the extra backend cannot pay for itself.
    """
    accurate_bridge = [row for row in bridge.values() if row.rates and row.diff <= tolerance]
    runtimes = [
        row for row in st_rows if row.rates and row.name.startswith("st ") and "torch" not in row.name
    ]
    accurate_rt = [row for row in runtimes if row.diff <= tolerance]
    if not runtimes:
        return "undecided: no onnx/openvino backend could be measured"
    if not accurate_bridge:
        return "undecided: no bridge precision is within tolerance"
    best_bridge = max(accurate_bridge, key=lambda row: row.best)
    if not accurate_rt:
        return f"no backend: no onnx/openvino row is within |Δ| {tolerance}; bridge {best_bridge.name} is"
    best_rt = max(accurate_rt, key=lambda row: row.best)
    ratio = best_rt.best / best_bridge.best
    paired = paired_ratio(best_rt, best_bridge)
    # Both the best rounds and the same-round ratios must show the gain: on a shared machine either alone can lie.
    verdict = "add it" if ratio > 1.1 and paired > 1.1 else "do not add it"
    return (
        f"{verdict}: best runtime within |Δ| {tolerance} is {best_rt.name} at {best_rt.best:.1f} pairs/s, "
        f"{ratio:.2f}x the bridge's {best_bridge.name} ({best_bridge.best:.1f} pairs/s, |Δ| {best_bridge.diff:.4f}); "
        f"same-round ratio median {paired:.2f}x"
    )


def bridge_backend_decision(
    torch_rows: Mapping[str, Row],
    ov_rows: Mapping[str, Row],
    tolerance: float = TOLERANCE,
    margin: float = 1.05,
) -> str:
    """Does the bridge's OpenVINO engine beat its torch engine at equal accuracy? Same batcher, same pairs.

    Per precision both measured (fp32 vs fp32, bf16 vs bf16) and for the fastest configuration within
    ``tolerance`` of s-t fp32 on each side: OpenVINO wins a comparison when both its best round and the median
    same-round ratio exceed ``margin`` (5 %: what round-to-round noise on a shared machine stays under). The
    backend is worth shipping when it wins the best-vs-best comparison.
    """
    parts = []
    for precision, ov_row in ov_rows.items():
        torch_row = torch_rows.get(precision)
        if torch_row is None or not torch_row.rates or not ov_row.rates:
            continue
        parts.append(
            f"{precision}: {ov_row.best / torch_row.best:.2f}x (same-round median {paired_ratio(ov_row, torch_row):.2f}x, "
            f"|Δ| {ov_row.diff:.4f} vs {torch_row.diff:.4f})"
        )
    accurate_torch = [row for row in torch_rows.values() if row.rates and row.diff <= tolerance]
    accurate_ov = [row for row in ov_rows.values() if row.rates and row.diff <= tolerance]
    if not accurate_ov or not accurate_torch:
        return "undecided: no openvino and torch rows within tolerance to compare" + (
            f" ({'; '.join(parts)})" if parts else ""
        )
    best_ov = max(accurate_ov, key=lambda row: row.best)
    best_torch = max(accurate_torch, key=lambda row: row.best)
    ratio, paired = best_ov.best / best_torch.best, paired_ratio(best_ov, best_torch)
    verdict = (
        "ship backend: openvino" if ratio > margin and paired > margin else "do not ship backend: openvino"
    )
    return (
        f"{verdict}: best within |Δ| {tolerance}: {best_ov.name} {best_ov.best:.1f} vs {best_torch.name} "
        f"{best_torch.best:.1f} pairs/s = {ratio:.2f}x (same-round median {paired:.2f}x); per precision: "
        + "; ".join(parts)
    )


def paired_ratio(a: Row, b: Row) -> float:
    """Median over rounds of a's rate / b's in the same round: less exposed to a quiet or busy round than bests."""
    ratios = [x / y for x, y in zip(a.rates, b.rates, strict=False) if y > 0]
    return statistics.median(ratios) if ratios else float("nan")


# -- inputs ---------------------------------------------------------------------------------------------------


def default_model() -> Path | None:
    return next((path for path in DEFAULT_MODELS if (path / "config.json").exists()), None)


def load_texts() -> tuple[list[str], list[str]]:
    """Corpus words and query texts from the first shared collection found, else a synthetic vocabulary."""
    for name in COLLECTIONS:
        folder = SHARED / "collections" / name
        if (folder / "corpus.jsonl").exists() and (folder / "queries.jsonl").exists():
            words: list[str] = []
            with open(folder / "corpus.jsonl", encoding="utf8") as handle:
                for line in handle:
                    doc = json.loads(line)
                    words.extend(re.findall(r"\S+", f"{doc.get('title', '')} {doc.get('text', '')}"))
                    if len(words) > 400_000:
                        break
            with open(folder / "queries.jsonl", encoding="utf8") as handle:
                queries = [json.loads(line)["text"] for line in handle]
            return words, queries
    rng = random.Random(7)
    words = [rng.choice(FALLBACK_WORDS) for _ in range(200_000)]
    queries = [" ".join(rng.choice(FALLBACK_WORDS) for _ in range(rng.randint(3, 9))) for _ in range(200)]
    return words, queries


def build_groups(pairs: int, per_call: int, seed: int) -> list[Group]:
    """Deterministic (query, passages) groups; passages are 40-300 consecutive corpus words."""
    words, queries = load_texts()
    rng = random.Random(seed)
    groups = []
    for start in range(0, pairs, per_call):
        count = min(per_call, pairs - start)
        passages = []
        for _ in range(count):
            length = rng.randint(40, 300)
            offset = rng.randrange(0, len(words) - length)
            passages.append(" ".join(words[offset : offset + length]))
        groups.append((rng.choice(queries), passages))
    return groups


def cpu_flags() -> list[str]:
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [flag for flag in wanted if flag in have]
    return []


def load_average() -> float:
    with contextlib.suppress(OSError):
        return os.getloadavg()[0]
    return float("nan")


# -- the machine's matmul rate --------------------------------------------------------------------------------


def matmul_rate(
    dtype: str,
    device: str,
    size: int,
    workers: int,
    threads: int,
    seconds: float = 1.0,
    int8_scheme: Any = None,
) -> float:
    """GFLOP/s of ``workers`` threads (``threads`` torch threads each, as the scorer runs) multiplying at once.

    fp32/bf16/fp16: ``torch.mm`` of two ``size``² matrices. int8: the bridge's own dynamic-int8 Linear
    (``bridge.scoring.loading.quantize_int8``, with the int8 model's own scheme when it has one) on a ``size``²
    float input: quantising the input included, as in the model.
    """
    import torch

    if device.startswith("cuda"):
        torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
        a = torch.randn(size, size, device=device, dtype=torch_dtype)
        b = torch.randn(size, size, device=device, dtype=torch_dtype)
        for _ in range(3):
            torch.mm(a, b)
        torch.cuda.synchronize()
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            for _ in range(10):
                torch.mm(a, b)
            torch.cuda.synchronize()
            count += 10
        return 2 * size**3 * count / (time.perf_counter() - started) / 1e9

    op: Callable[[], Any]
    if dtype == "int8":
        from bridge.scoring.loading import quantize_int8

        dense = torch.nn.Sequential(torch.nn.Linear(size, size, bias=False))
        layer = quantize_int8(dense) if int8_scheme is None else quantize_int8(dense, int8_scheme)
        x = torch.randn(size, size)

        def op() -> Any:
            return layer(x)

    else:
        torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
        a = torch.randn(size, size).to(torch_dtype)
        b = torch.randn(size, size).to(torch_dtype)

        def op() -> Any:
            return torch.mm(a, b)

    counts = [0] * workers
    barrier = threading.Barrier(workers + 1)
    stop = threading.Event()

    def run(index: int) -> None:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            op()  # warm-up: thread pool, packed weights
            barrier.wait()
            while not stop.is_set():
                op()
                counts[index] += 1

    pool = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in pool:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in pool:
        thread.join()
    # Operations still running when stop was set finished after ``elapsed``: count them, time them too.
    elapsed = time.perf_counter() - started
    return 2 * size**3 * sum(counts) / elapsed / 1e9


# -- sentence-transformers ------------------------------------------------------------------------------------


def flat_pairs(groups: Sequence[Group]) -> list[tuple[str, str]]:
    return [(query, passage) for query, passages in groups for passage in passages]


class StTorch:
    """sentence-transformers' torch backend in this interpreter (fp32; fp16 on a GPU too)."""

    def __init__(self, model_path: str, device: str, dtype: str, threads: int, batch_size: int) -> None:
        import torch
        from sentence_transformers import CrossEncoder

        self.threads, self.batch_size = threads, batch_size
        torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
        st_device = None if device == "auto" else device
        self.encoder = CrossEncoder(model_path, device=st_device, model_kwargs={"dtype": torch_dtype})
        self.encoder.predict([("warm", "up")] * 4, batch_size=32, show_progress_bar=False)

    def run(self, pairs: Sequence[tuple[str, str]]) -> tuple[float, list[float]]:
        import torch

        # Explicit: the scorer's workers size their own thread teams, which can leak into torch's default.
        torch.set_num_threads(self.threads)
        started = time.perf_counter()
        scores = self.encoder.predict(list(pairs), batch_size=self.batch_size, show_progress_bar=False)
        seconds = time.perf_counter() - started
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            seconds = time.perf_counter() - started
        return len(pairs) / seconds, [float(score) for score in scores]


def st_worker(model: str, export_dir: Path, threads: int, batch_size: int, backends: Sequence[str]) -> None:
    """``--st-worker``: load s-t's onnx/openvino backends here, then score the pairs on each ``run`` line.

    Protocol (one JSON object per line): stdin first gives ``{"pairs": [[q, p], ...]}``; stdout answers
    ``{"loaded": {backend: "ok" | reason}}``; then each stdin line ``{"run": backend}`` is answered with
    ``{"rate": pairs/s, "scores": [...]}``. Exports are cached in ``export_dir`` (the model dir may be read-only).
    """
    pairs = [tuple(pair) for pair in json.loads(sys.stdin.readline())["pairs"]]
    encoders: dict[str, Any] = {}
    loaded: dict[str, str] = {}
    precision: dict[str, str] = {}
    cross_encoder: Any = None
    try:
        import torch

        torch.set_num_threads(threads)
        from sentence_transformers import CrossEncoder

        cross_encoder = CrossEncoder
    except Exception as exc:
        loaded = {name: f"sentence-transformers unavailable: {exc}" for name in backends}
    if cross_encoder is not None:
        for name in backends:
            try:
                encoders[name] = load_st_backend(cross_encoder, model, export_dir, name, threads)
                encoders[name].predict(pairs[:8], batch_size=32, show_progress_bar=False)
                loaded[name] = "ok"
                precision[name] = backend_precision(name, encoders[name])
            except Exception as exc:  # a backend that cannot load is skipped, with the reason
                loaded[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    print(json.dumps({"loaded": loaded, "precision": precision}), flush=True)
    for line in sys.stdin:
        name = json.loads(line)["run"]
        started = time.perf_counter()
        scores = encoders[name].predict(pairs, batch_size=batch_size, show_progress_bar=False)
        rate = len(pairs) / (time.perf_counter() - started)
        print(json.dumps({"rate": rate, "scores": [float(s) for s in scores]}), flush=True)


def load_st_backend(cross_encoder: Any, model: str, export_dir: Path, name: str, threads: int) -> Any:
    """One s-t backend, exporting (maintained exporters: optimum via s-t) on first use and caching the export."""
    if name.startswith("openvino"):
        target = export_dir / "openvino"
        if not (target / "openvino" / "openvino_model.xml").exists():
            cross_encoder(model, backend="openvino").save_pretrained(str(target))
        ov_config = {"INFERENCE_NUM_THREADS": str(threads)}
        if name == "openvino-fp32":
            ov_config["INFERENCE_PRECISION_HINT"] = "f32"  # the default on AMX / AVX512-BF16 CPUs is bf16
        return cross_encoder(str(target), backend="openvino", model_kwargs={"ov_config": ov_config})
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    target = export_dir / "onnx"
    if not (target / "onnx" / "model.onnx").exists():
        cross_encoder(model, backend="onnx").save_pretrained(str(target))
    if name == "onnx":
        return cross_encoder(
            str(target),
            backend="onnx",
            model_kwargs={"file_name": "onnx/model.onnx", "session_options": options},
        )
    flags = set(cpu_flags())
    config = "avx512_vnni" if "avx512_vnni" in flags else "avx512" if "avx512f" in flags else "avx2"
    if platform.machine() in ("aarch64", "arm64"):
        config = "arm64"
    file_name = f"onnx/model_qint8_{config}.onnx"
    if not (target / file_name).exists():
        from sentence_transformers import export_dynamic_quantized_onnx_model

        export_dynamic_quantized_onnx_model(cross_encoder(str(target), backend="onnx"), config, str(target))
    return cross_encoder(
        str(target), backend="onnx", model_kwargs={"file_name": file_name, "session_options": options}
    )


def backend_precision(name: str, encoder: Any) -> str:
    """The precision a backend really computes in: OpenVINO picks bf16 by itself on AMX CPUs."""
    if name.startswith("openvino"):
        with contextlib.suppress(Exception):
            hint = str(encoder.model.request.get_property("INFERENCE_PRECISION_HINT"))
            return "bf16" if "bfloat16" in hint or "bf16" in hint else "fp16" if "16" in hint else "fp32"
    return "int8" if name.endswith("int8") else "fp32"


class StBackends:
    """The ``--st-worker`` subprocess, in ``--st-python``, from the bench's side of the pipe."""

    def __init__(self, args: argparse.Namespace, pairs: Sequence[tuple[str, str]]) -> None:
        python = args.st_python
        args.export_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = args.export_dir / "st-worker.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - open for the worker's lifetime
        self.process = subprocess.Popen(
            [python, str(Path(__file__).resolve()), "--st-worker", "--model", str(args.model),
             "--export-dir", str(args.export_dir), "--st-threads", str(args.st_threads),
             "--st-batch-size", str(args.st_batch_size), "--st-backends", ",".join(args.st_backends)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=str(REPO),
        )  # fmt: skip
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"pairs": [list(pair) for pair in pairs]}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        answer = json.loads(line) if line else {"loaded": dict.fromkeys(args.st_backends, f"{python} exited")}
        self.loaded: dict[str, str] = answer["loaded"]
        self.precision: dict[str, str] = answer.get("precision", {})

    def run(self, name: str) -> tuple[float, list[float]] | None:
        """One timed pass of backend ``name``; None when the worker died (its log says why)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(json.dumps({"run": name}) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except OSError:
            line = ""
        if not line:
            self.loaded = dict.fromkeys(self.loaded, f"the worker exited; see {self.log_path}")
            return None
        answer = json.loads(line)
        return float(answer["rate"]), [float(s) for s in answer["scores"]]

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


# -- the bridge -----------------------------------------------------------------------------------------------


def bridge_settings(args: argparse.Namespace, precision: str, backend: str = "torch") -> Any:
    from bridge.scoring.settings import ModelSettings

    options: dict[str, Any] = {
        "source": str(args.model),
        "device": args.device,
        "cache_size": 0,
        "max_batch_tokens": args.max_batch_tokens,
        "threads": args.threads,
        "workers": args.workers,
    }
    if precision == "int8":
        options.update(dtype="auto", quantize="int8")
    else:
        options["dtype"] = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[precision]
    if backend != "torch":
        options.update(backend=backend, export_dir=str(args.export_dir / f"bridge-{backend}"))
    if "allow_inexact" in ModelSettings.model_fields:
        # Measure the precision asked for; its max |Δ| below is what the start-up guard would judge.
        options["allow_inexact"] = True
    return ModelSettings(**options)


async def run_callers(scorer: Any, groups: Sequence[Group], callers: int) -> tuple[float, list[float]]:
    """``callers`` callers at once, caller k scoring groups k, k+callers, ... in turn: all pairs, in order."""

    async def caller(k: int) -> list[list[float]]:
        return [await scorer.score(q, ps) for q, ps in groups[k::callers]]

    started = time.perf_counter()
    results = await asyncio.gather(*(caller(k) for k in range(callers)))
    seconds = time.perf_counter() - started
    by_group: list[list[float]] = [[] for _ in groups]
    for k, scored in enumerate(results):
        for j, scores in enumerate(scored):
            by_group[k + j * callers] = scores
    flat = [score for scores in by_group for score in scores]
    return len(flat) / seconds, flat


# -- the run --------------------------------------------------------------------------------------------------


def fmt(value: float, spec: str) -> str:
    return "-" if value != value else format(value, spec)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from bridge.scoring.local import LocalScorer

    on_gpu = args.device.startswith("cuda")
    load_start = load_average()
    print(f"load average (1 min) at the start: {load_start:.2f} on {len(os.sched_getaffinity(0))} cores")
    groups = build_groups(args.pairs, args.per_call, args.seed)
    pairs = flat_pairs(groups)

    scorers: dict[str, Any] = {}
    for precision in args.precisions:
        scorer = LocalScorer(f"bench-{precision}", bridge_settings(args, precision))
        await scorer.start()
        scorers[precision] = scorer
    for precision in args.ov_precisions:
        scorer = LocalScorer(f"bench-ov-{precision}", bridge_settings(args, precision, "openvino"))
        await scorer.start()
        scorers[f"ov-{precision}"] = scorer
    first = next(iter(scorers.values())).model
    assert first is not None
    shape = Shape.from_config(first.config)
    lengths = [len(item) for q, ps in groups for item in first.encode(q, ps)]
    tokens = statistics.fmean(lengths)
    gflop = mean_gflop(shape, lengths)
    workers, threads = first.workers, first.threads
    attention = getattr(first.config, "_attn_implementation", "?")
    guard: dict[str, Any] = {}
    for precision, scorer in scorers.items():
        report = getattr(scorer.model, "precision", None)  # the start-up precision guard's verdict, if any
        guard[precision] = report.as_dict() if report is not None else None
        print(
            f"bridge {precision}: {scorer.model.describe()}"
            + (f", attention {attention}" if getattr(scorer.model, "backend", "torch") == "torch" else "")
            + (f"; precision guard: {guard[precision]}" if guard[precision] else "")
        )
    int8_scheme = getattr(scorers["int8"].model.placement, "int8", None) if "int8" in scorers else None
    if int8_scheme is not None:
        print(f"bridge int8 scheme: {getattr(int8_scheme, 'reason', int8_scheme)}")
    print(
        f"bridge: {workers} workers x {threads} torch threads, batches up to {first.max_batch_tokens} padded tokens"
    )
    print(
        f"pairs: {len(pairs)} in {len(groups)} groups of {args.per_call}; {tokens:.1f} tokens per pair "
        f"(after truncation to {first.max_length}); {gflop:.3f} GFLOP per pair ({shape.layers} layers, "
        f"h {shape.hidden}, i {shape.intermediate}, {shape.heads} heads); {args.rounds} rounds, best reported"
    )

    # sentence-transformers: torch in this interpreter, the runtimes in --st-python; length-sorted pairs.
    order = sorted(range(len(pairs)), key=lambda j: lengths[j])
    sorted_pairs = [pairs[j] for j in order]

    def unsort(scores: list[float]) -> list[float]:
        out = [0.0] * len(scores)
        for position, j in enumerate(order):
            out[j] = scores[position]
        return out

    st_dtypes = ["fp32", "fp16"] if on_gpu else ["fp32"]
    st_torch: dict[str, StTorch] = {}
    st_rows: dict[str, Row] = {}
    for dtype in [] if args.skip_st else st_dtypes:
        name = f"st torch {dtype}"
        st_rows[name] = Row(name, dtype if dtype != "fp32" else "reference")
        try:
            st_torch[dtype] = StTorch(
                str(args.model), args.device, dtype, args.st_threads, args.st_batch_size
            )
        except Exception as exc:  # reported in the table
            st_rows[name].note = f"skipped: {type(exc).__name__}: {exc}"[:200]
    runtimes: StBackends | None = None
    if not args.skip_st and not on_gpu and args.st_backends:
        runtimes = StBackends(args, sorted_pairs)
        for backend in args.st_backends:
            name = f"st {backend}"
            dtype = runtimes.precision.get(backend, "int8" if backend.endswith("int8") else "fp32")
            status = runtimes.loaded.get(backend, "not requested")
            st_rows[name] = Row(name, dtype, note="" if status == "ok" else f"skipped: {status}")
    print(
        f"sentence-transformers: batch_size {args.st_batch_size}, {args.st_threads} threads, pairs sorted by length"
    )

    matmul_dtypes = sorted(
        {"fp32" if p == "fp32" else p for p in args.precisions} | ({"fp16"} if on_gpu else set())
    )
    matmul: dict[str, list[float]] = {dtype: [] for dtype in matmul_dtypes}
    bridge_rows = {p: Row(f"bridge {p}", p) for p in args.precisions}
    ov_rows = {p: Row(f"bridge-openvino {p}", p) for p in args.ov_precisions}
    multi_rows = (
        {p: Row(f"bridge {p}, {args.callers} callers", p) for p in args.precisions}
        if args.callers > 1
        else {}
    )
    reference: list[float] = []
    all_scores: dict[str, list[float]] = {}
    deadline = time.monotonic() + args.max_seconds
    for round_no in range(1, args.rounds + 1):
        line = [f"round {round_no}:"]
        for dtype in matmul_dtypes:
            rate = await asyncio.to_thread(
                matmul_rate, dtype, args.device, args.matmul_size, workers, threads, 1.0, int8_scheme
            )
            matmul[dtype].append(rate)
            line.append(f"mm {dtype} {rate:.0f}")
        for dtype, encoder in st_torch.items():
            # Blocks the event loop on purpose: nothing else runs meanwhile.
            rate, scores = encoder.run(sorted_pairs)
            st_rows[f"st torch {dtype}"].rates.append(rate)
            all_scores[f"st torch {dtype}"] = unsort(scores)
            line.append(f"st-{dtype} {rate:.1f}")
        if runtimes is not None:
            for backend in args.st_backends:
                measured = runtimes.run(backend) if runtimes.loaded.get(backend) == "ok" else None
                if measured is None:
                    st_rows[f"st {backend}"].note = f"skipped: {runtimes.loaded.get(backend)}"
                else:
                    rate, scores = measured
                    st_rows[f"st {backend}"].rates.append(rate)
                    all_scores[f"st {backend}"] = unsort(scores)
                    line.append(f"st-{backend} {rate:.1f}")
        for precision, scorer in scorers.items():
            rate, scores = await run_callers(scorer, groups, 1)
            row = ov_rows[precision[3:]] if precision.startswith("ov-") else bridge_rows[precision]
            row.rates.append(rate)
            all_scores[row.name] = scores
            line.append(f"{precision} {rate:.1f}")
            if precision in multi_rows:
                rate, _ = await run_callers(scorer, groups, args.callers)
                multi_rows[precision].rates.append(rate)
                line.append(f"{precision}x{args.callers} {rate:.1f}")
        print("  " + "  ".join(line) + " (pairs/s; mm: GFLOP/s)", flush=True)
        if time.monotonic() > deadline and round_no < args.rounds:
            print(f"  stopping after round {round_no}: --max-seconds {args.max_seconds} reached")
            break
    if runtimes is not None:
        runtimes.close()

    reference_name = "st torch fp32" if "st torch fp32" in all_scores else f"bridge {args.precisions[0]}"
    reference = all_scores.get(reference_name, [])
    for row in [*st_rows.values(), *bridge_rows.values(), *ov_rows.values()]:
        if row.name in all_scores and reference:
            row.diff = max_abs_diff(reference, all_scores[row.name])
            row.top10_changes = top_k_changes(reference, all_scores[row.name], groups, 10)
    for precision, row in multi_rows.items():
        row.diff, row.top10_changes = bridge_rows[precision].diff, bridge_rows[precision].top10_changes

    # Latency: one caller, one query's N passages, per precision; rounds interleaved.
    latency: dict[str, dict[str, dict[str, float]]] = {}
    if args.latency:
        samples: dict[tuple[str, int], list[float]] = {}
        sets = {n: build_groups(n * args.latency_rounds, n, args.seed + n) for n in args.latency}
        for round_no in range(args.latency_rounds):
            for n, latency_groups in sets.items():
                query, passages = latency_groups[round_no]
                for precision, scorer in scorers.items():
                    started = time.perf_counter()
                    await scorer.score(query, passages)
                    samples.setdefault((precision, n), []).append((time.perf_counter() - started) * 1000)
        for (precision, n), values in samples.items():
            latency.setdefault(precision, {})[str(n)] = {
                "median_ms": round(statistics.median(values), 1),
                "best_ms": round(min(values), 1),
            }
    for scorer in scorers.values():
        await scorer.close()

    # The table.
    mm_best = {dtype: max(rates) for dtype, rates in matmul.items() if rates}
    rows = [*st_rows.values(), *bridge_rows.values(), *ov_rows.values(), *multi_rows.values()]
    efficiency: dict[str, float] = {}
    print()
    header = (
        f"{'configuration':<28}{'computes':<9}{'pairs/s':>9}{'median':>9}{'tok/pair':>9}{'GFLOP/p':>8}{'GFLOP/s':>9}"
        f"{'mm GFLOP/s':>11}{'of mm':>7}{'max|Δ|':>9}{'top10≠':>7}"
    )
    print(header)
    print("-" * len(header))
    figures: dict[str, dict[str, Any]] = {}
    for row in rows:
        mm_dtype = "fp32" if row.dtype == "reference" else row.dtype
        achieved = row.best * gflop
        mm = mm_best.get(mm_dtype, float("nan"))
        share = achieved / mm if mm == mm else float("nan")
        if row.name in (f"bridge {p}" for p in args.precisions):
            efficiency[row.dtype] = share
        if not row.rates:
            print(f"{row.name:<28}{mm_dtype:<9}{row.note}")
        else:
            print(
                f"{row.name:<28}{mm_dtype:<9}{row.best:>9.1f}{statistics.median(row.rates):>9.1f}{tokens:>9.1f}{gflop:>8.3f}"
                f"{fmt(achieved, '.1f'):>9}{fmt(mm, '.1f'):>11}{fmt(share, '.1%'):>7}{fmt(row.diff, '.4f'):>9}"
                f"{'-' if row.top10_changes is None else row.top10_changes:>7}"
            )
        figures[row.name] = {
            "pairs_per_s": round(row.best, 2) if row.rates else None,
            "rounds": [round(rate, 2) for rate in row.rates],
            "gflop_per_s": round(achieved, 2) if row.rates else None,
            "matmul_dtype": mm_dtype,
            "share_of_matmul": round(share, 4) if row.rates and share == share else None,
            "max_abs_diff": round(row.diff, 6) if row.diff == row.diff else None,
            "top10_changes": row.top10_changes,
            "note": row.note or None,
        }
    rates = ", ".join(f"{d} {r:.1f}" for d, r in mm_best.items())
    print(f"matmul {args.matmul_size}², {workers} threads x {threads} torch threads, best GFLOP/s: {rates}")
    print(f"max|Δ| and top10≠ (queries whose top 10 changed, of {len(groups)}): vs {reference_name}")
    if latency:
        print()
        print(f"latency, one caller, one query's N passages (median / best of {args.latency_rounds}, ms)")
        print(f"{'precision':<12}" + "".join(f"{'N=' + str(n):>16}" for n in args.latency))
        for precision, by_n in latency.items():
            print(
                f"{precision:<12}"
                + "".join(
                    f"{by_n[str(n)]['median_ms']:>9.0f} / {by_n[str(n)]['best_ms']:<4.0f}"
                    for n in args.latency
                )
            )
    multi_gain = None
    if multi_rows:
        best_p = max(bridge_rows, key=lambda p: bridge_rows[p].best)
        multi_gain = multi_rows[best_p].best / bridge_rows[best_p].best
        print(f"{args.callers} callers vs 1 ({best_p}): {multi_gain:.2f}x")
    checks = verdicts(
        "cuda" if on_gpu else "cpu",
        {**bridge_rows, **{f"openvino_{p}": row for p, row in ov_rows.items()}},
        list(st_rows.values()),
        efficiency,
        multi_gain,
    )
    decision = backend_decision(bridge_rows, list(st_rows.values())) if not on_gpu else "not judged on a GPU"
    ov_decision = bridge_backend_decision(bridge_rows, ov_rows) if ov_rows else "not measured"
    print()
    for name, check in checks.items():
        mark = "PASS" if check["pass"] else "n/a" if check["pass"] is None else "FAIL"
        print(f"{mark:<5}{name}: {check['why']}")
    print(f"onnx/openvino backend in the bridge (s-t's runtimes as a proxy): {decision}")
    print(f"bridge-openvino vs bridge-torch: {ov_decision}")
    load_end = load_average()
    machine = {
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "load_avg_1min_start": round(load_start, 2),
        "load_avg_1min_end": round(load_end, 2),
        "torch": __import__("torch").__version__,
        "transformers": __import__("transformers").__version__,
    }
    if on_gpu:
        import torch

        machine["gpu"] = torch.cuda.get_device_name(0)
    print(f"machine: {machine}")
    return {
        "device": args.device,
        "pairs": len(pairs),
        "groups": len(groups),
        "tokens_per_pair": round(tokens, 2),
        "gflop_per_pair": round(gflop, 4),
        "gflop_formula": "layers*(2*(4h^2+2hi)*t + 4*h*t^2) + 2h^2 + 2h*labels; real tokens, padding not counted",
        "model": {
            "layers": shape.layers,
            "hidden": shape.hidden,
            "intermediate": shape.intermediate,
            "heads": shape.heads,
            "attention": attention,
        },
        "precision_guard": guard,
        "int8_scheme": getattr(int8_scheme, "reason", None),
        "bridge_layout": {"workers": workers, "threads": threads, "max_batch_tokens": first.max_batch_tokens},
        "matmul_gflop_per_s": {d: round(r, 2) for d, r in mm_best.items()},
        "matmul_size": args.matmul_size,
        "reference": reference_name,
        "configurations": figures,
        "latency_ms": latency,
        "callers": args.callers,
        "callers_gain": round(multi_gain, 3) if multi_gain is not None else None,
        "targets": checks,
        "backend_decision": decision,
        "bridge_backend_decision": ov_decision,
        "openvino": __import__("openvino").__version__ if ov_rows else None,
        "machine": machine,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=default_model(), help="cross-encoder directory")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1")
    parser.add_argument("--pairs", type=int, default=None, help="default 100 on a CPU, 16000 on a GPU")
    parser.add_argument(
        "--per-call", type=int, default=None, help="passages per score() call (20 CPU, 100 GPU)"
    )
    parser.add_argument(
        "--callers", type=int, default=None, help="concurrent callers (default 1 CPU, 16 GPU)"
    )
    parser.add_argument(
        "--precisions", default=None, help="default fp32,bf16,int8 on a CPU, fp16,bf16 on a GPU"
    )
    parser.add_argument(
        "--ov-precisions",
        default=None,
        help="bridge with backend openvino: default fp32,bf16 on a CPU; '' skips",
    )
    parser.add_argument("--rounds", type=int, default=6, help="short rounds: best-of-many on a busy machine")
    parser.add_argument("--max-seconds", type=float, default=200, help="no new round after this")
    parser.add_argument(
        "--latency", default="20,50,100", help="passages per query for the latency section; '' skips"
    )
    parser.add_argument("--latency-rounds", type=int, default=3)
    parser.add_argument("--matmul-size", type=int, default=None, help="default 2048 on a CPU, 8192 on a GPU")
    parser.add_argument("--max-batch-tokens", type=int, default=None, help="default: the scorer's own")
    parser.add_argument(
        "--workers", type=int, default=None, help="scorer inference threads (default: its own)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per worker (default: its own)"
    )
    parser.add_argument(
        "--st-threads", type=int, default=None, help="threads for s-t (default: usable cores)"
    )
    parser.add_argument(
        "--st-python",
        default=os.environ.get("RERANK_BENCH_ST_PYTHON", sys.executable),
        help="interpreter with sentence-transformers[onnx,openvino] for those backends (env RERANK_BENCH_ST_PYTHON)",
    )
    parser.add_argument("--st-backends", default=",".join(ST_BACKENDS), help="'' skips them")
    parser.add_argument(
        "--export-dir", type=Path, default=Path(tempfile.gettempdir()) / "rerank-bench-exports",
        help="where the onnx/openvino exports are cached",
    )  # fmt: skip
    parser.add_argument(
        "--st-batch-size", type=int, default=32, help="s-t predict's batch_size (its default)"
    )
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--skip-st", action="store_true", help="bridge numbers only")
    parser.add_argument("--st-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.st_threads = args.st_threads or len(os.sched_getaffinity(0))
    args.st_backends = [name for name in args.st_backends.split(",") if name]
    if args.model is None:
        parser.error("no model found under ../shared/models; pass --model")
    if args.st_worker:
        export_dir = args.export_dir / args.model.name
        export_dir.mkdir(parents=True, exist_ok=True)
        logging.disable(logging.WARNING)
        st_worker(str(args.model), export_dir, args.st_threads, args.st_batch_size, args.st_backends)
        return
    on_gpu = args.device.startswith("cuda")
    args.pairs = args.pairs or (16000 if on_gpu else 100)
    args.per_call = args.per_call or (100 if on_gpu else 20)
    args.callers = args.callers or (16 if on_gpu else 1)
    args.matmul_size = args.matmul_size or (8192 if on_gpu else 2048)
    args.precisions = (args.precisions or ("fp16,bf16" if on_gpu else "fp32,bf16,int8")).split(",")
    args.latency = [int(n) for n in args.latency.split(",") if n]
    ov_default = "" if on_gpu else "fp32,bf16"
    args.ov_precisions = [
        p for p in (ov_default if args.ov_precisions is None else args.ov_precisions).split(",") if p
    ]
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    result = asyncio.run(bench(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
