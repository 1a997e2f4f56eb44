"""The scoring bench's pure helpers: the FLOP count it divides by, the accuracy checks, the targets' verdicts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from bench.scoring import (
    Row,
    Shape,
    backend_decision,
    beats_st,
    bridge_backend_decision,
    max_abs_diff,
    mean_gflop,
    pair_flops,
    paired_ratio,
    run_callers,
    top_k_changes,
    verdicts,
)


def test_pair_flops_by_hand() -> None:
    shape = Shape(layers=2, hidden=4, intermediate=8, heads=2, labels=1)
    # per layer 2*(4*16 + 2*4*8)*3 + 4*4*3² = 768 + 144; two layers; pooler 2*16; classifier 2*4
    assert pair_flops(shape, 3) == 2 * 912 + 32 + 8


def test_pair_flops_matches_torchs_count_of_a_real_bert() -> None:
    """The formula is what torch's own FLOP counter sees for a BERT sequence classifier, matmuls and attention."""
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, num_labels=1,
    )  # fmt: skip
    model = BertForSequenceClassification(config).eval()
    tokens = 17
    ids = torch.randint(0, 50, (1, tokens))
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert counter.get_total_flops() == pair_flops(Shape.from_config(config), tokens)


def test_mean_gflop_averages_the_quadratic_term() -> None:
    shape = Shape(layers=6, hidden=384, intermediate=1536, heads=12)
    assert mean_gflop(shape, [100, 300]) == pytest.approx(
        (pair_flops(shape, 100) + pair_flops(shape, 300)) / 2e9
    )
    assert mean_gflop(shape, [100, 300]) > pair_flops(shape, 200) / 1e9


def test_diff_and_top_k_changes() -> None:
    groups = [("q1", ["a", "b", "c"]), ("q2", ["d", "e"])]
    reference = [0.9, 0.5, 0.1, 0.2, 0.3]
    swapped = [0.5, 0.9, 0.1, 0.2, 0.31]  # q1's top two swap, q2 keeps its order
    assert max_abs_diff(reference, swapped) == pytest.approx(0.4)
    assert top_k_changes(reference, swapped, groups, 10) == 1
    assert top_k_changes(reference, swapped, groups, 1) == 1
    assert max_abs_diff([], []) != max_abs_diff([], [])  # nan: nothing compared


def rows() -> list[Row]:
    return [
        Row("st torch fp32", "reference", [10.0], 0.0),
        Row("st openvino", "bf16", [30.0], 0.004),
        Row("st onnx-int8", "int8", [50.0], 0.2),
        Row("st onnx", "fp32", [], note="skipped: no optimum"),
    ]


def test_beats_st_compares_at_equal_tolerance() -> None:
    # An accurate configuration is not held against a less accurate backend ...
    assert beats_st(35.0, 0.0, rows(), 0.02)[0]
    # ... but must beat every accurate one,
    assert not beats_st(25.0, 0.0, rows(), 0.02)[0]
    # and an inexact one competes with backends as inexact as it is.
    ok, why = beats_st(40.0, 0.3, rows(), 0.02)
    assert not ok and "st onnx-int8" in why


def test_verdicts_on_a_cpu() -> None:
    bridge = {
        "fp32": Row("bridge fp32", "fp32", [20.0], 0.0),
        "int8": Row("bridge int8", "int8", [38.0], 0.01),
    }
    checks = verdicts("cpu", bridge, rows(), {"fp32": 0.85}, None)
    assert checks["fp32_at_80pct_of_matmul"]["pass"] is True
    assert checks["int8_within_tolerance"]["pass"] is True
    assert checks["int8_1.8x_fp32"]["pass"] is True
    assert checks["fp32_beats_best_st"]["pass"] is False  # openvino's 30 within tolerance
    assert checks["int8_beats_best_st"]["pass"] is True
    bridge["int8"] = Row("bridge int8", "int8", [30.0], 0.3)
    checks = verdicts("cpu", bridge, rows(), {"fp32": 0.7}, None)
    assert [
        checks[k]["pass"] for k in ("fp32_at_80pct_of_matmul", "int8_within_tolerance", "int8_1.8x_fp32")
    ] == [
        False,
        False,
        False,
    ]


def test_verdicts_on_a_gpu() -> None:
    bridge = {"fp16": Row("bridge fp16", "fp16", [45_000.0], 0.001)}
    st = [Row("st torch fp32", "reference", [9000.0], 0.0), Row("st torch fp16", "fp16", [20_000.0], 0.001)]
    checks = verdicts("cuda", bridge, st, {}, 1.2)
    assert checks["gpu_40k_pairs_per_s"]["pass"] is True
    assert checks["gpu_2x_st_fp16"]["pass"] is True
    assert checks["gpu_16_callers_1.3x"]["pass"] is False


def test_backend_decision() -> None:
    bridge = {
        "fp32": Row("bridge fp32", "fp32", [20.0], 0.0),
        "bf16": Row("bridge bf16", "bf16", [45.0], 0.008),
    }
    assert backend_decision(bridge, rows()).startswith("do not add it")
    faster = [*rows(), Row("st openvino-fp32", "fp32", [60.0], 0.0001)]
    assert backend_decision(bridge, faster).startswith("add it")
    # One quiet round of the runtime is not enough: the same-round ratios must agree.
    bridge = {"bf16": Row("bridge bf16", "bf16", [40.0, 45.0, 44.0], 0.008)}
    lucky = [Row("st openvino", "bf16", [30.0, 55.0, 40.0], 0.008)]
    assert paired_ratio(lucky[0], bridge["bf16"]) == pytest.approx(40 / 44)
    assert backend_decision(bridge, lucky).startswith("do not add it")
    assert backend_decision(bridge, rows()[:1]).startswith("undecided")


def test_bridge_backend_decision_compares_engines_at_equal_accuracy() -> None:
    torch_rows = {
        "fp32": Row("bridge fp32", "fp32", [39.0, 38.0, 39.0], 0.0),
        "bf16": Row("bridge bf16", "bf16", [110.0, 113.0, 108.0], 0.010),
        "int8": Row("bridge int8", "int8", [200.0, 190.0, 195.0], 0.14),  # faster, but not within tolerance
    }
    ov_rows = {
        "fp32": Row("bridge-openvino fp32", "fp32", [43.0, 42.0, 41.0], 0.00001),
        "bf16": Row("bridge-openvino bf16", "bf16", [127.0, 125.0, 120.0], 0.008),
    }
    decision = bridge_backend_decision(torch_rows, ov_rows)
    assert decision.startswith("ship backend: openvino")
    assert "bridge-openvino bf16 127.0 vs bridge bf16 113.0" in decision and "fp32: 1.10x" in decision
    # A 3 % gain is within a shared machine's noise: not worth a backend.
    close = {"bf16": Row("bridge-openvino bf16", "bf16", [116.0, 114.0, 111.0], 0.008)}
    assert bridge_backend_decision(torch_rows, close).startswith("do not ship")
    # Faster only by being less accurate does not count.
    sloppy = {"bf16": Row("bridge-openvino bf16", "bf16", [300.0, 300.0, 300.0], 0.05)}
    assert bridge_backend_decision(torch_rows, sloppy).startswith("undecided")
    assert bridge_backend_decision({}, ov_rows).startswith("undecided")


class FakeScorer:
    """Scores each passage by its own number; slower for longer groups so callers finish out of order."""

    async def score(self, query: str, passages: Sequence[str]) -> list[float]:
        await asyncio.sleep(0.001 * len(passages))
        return [float(p) for p in passages]


async def test_run_callers_keeps_every_pair_in_order() -> None:
    groups = [(f"q{g}", [str(g * 10 + j) for j in range(1 + g % 3)]) for g in range(7)]
    expected = [float(p) for _, ps in groups for p in ps]
    for callers in (1, 3, 16):
        rate, scores = await run_callers(FakeScorer(), groups, callers)
        assert scores == expected and rate > 0
