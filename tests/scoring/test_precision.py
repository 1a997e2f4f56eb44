"""The int8 scheme per CPU family and the start-up precision guard: a model whose scores drift from float32 is
refused (float32 fallback) or kept with a warning, as configured; ``/_bridge/ready`` and the metrics say which."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import torch
from aiohttp import web

from bridge.config import Settings
from bridge.scoring import loading
from bridge.scoring import model as model_module
from bridge.scoring.bi_encoder import BiEncoderModel
from bridge.scoring.device import choose_placement, read_cpu_flags
from bridge.scoring.local import LocalScorer
from bridge.scoring.model import CrossEncoderModel
from bridge.scoring.precision import (
    CHECK_PASSAGES,
    CHECK_QUERY,
    Int8Scheme,
    choose_int8_scheme,
    guard_precision,
    judge,
    order_changed,
)
from bridge.scoring.settings import ModelSettings
from tests.bridge_server import running_bridge
from tests.ops.test_upstream_faults import serve
from tests.tiny_models import build_bi_encoder

ENGINES = ("qnnpack", "onednn", "x86", "fbgemm")
AMD_EPYC_AVX2 = "fpu sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2 sha_ni"
SKYLAKE_SP = "sse4_2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl"
CASCADE_LAKE = SKYLAKE_SP + " avx512_vnni"
ALDER_LAKE = "sse4_2 avx avx2 fma avx_vnni"
SAPPHIRE_RAPIDS = CASCADE_LAKE + " avx512_bf16 amx_bf16 amx_tile amx_int8 avx_vnni"
GRAVITON = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp"


@pytest.mark.parametrize(
    ("flags", "engines", "engine", "reduce_range"),
    [
        (AMD_EPYC_AVX2, ENGINES, "x86", True),
        (SKYLAKE_SP, ENGINES, "x86", True),  # AVX-512F without VNNI still sums pairs into int16
        (CASCADE_LAKE, ENGINES, "x86", False),
        (ALDER_LAKE, ENGINES, "x86", False),
        (SAPPHIRE_RAPIDS, ENGINES, "x86", False),
        (AMD_EPYC_AVX2, ("qnnpack", "fbgemm"), "fbgemm", True),  # a build without the x86 engine
        (GRAVITON, ("qnnpack",), "qnnpack", False),
    ],
)
def test_int8_scheme_by_cpu_family(
    flags: str, engines: tuple[str, ...], engine: str, reduce_range: bool
) -> None:
    scheme = choose_int8_scheme(set(flags.split()), engines)
    assert (scheme.engine, scheme.reduce_range) == (engine, reduce_range)
    assert scheme.label == ("int8 (reduce_range)" if reduce_range else "int8")
    assert ("reduce_range" in scheme.reason) is reduce_range
    if not reduce_range and "avx" in flags:
        assert "vnni" in scheme.reason or "amx" in scheme.reason


def test_int8_range_can_be_configured_against_the_cpu_family() -> None:
    forced = choose_int8_scheme(set(SAPPHIRE_RAPIDS.split()), ENGINES, reduce_range=True)
    assert (forced.engine, forced.reduce_range) == ("x86", True) and "configured" in forced.reason
    full = choose_placement(
        "cpu", "auto", "int8", cpu_flags=set(AMD_EPYC_AVX2.split()), int8_reduce_range=False
    )
    assert full.int8 is not None and not full.int8.reduce_range and full.label == "int8"
    assert ModelSettings(source="m", quantize="int8", int8_reduce_range=True).int8_reduce_range is True
    with pytest.raises(ValueError, match="int8_reduce_range applies to quantize: int8 only"):
        ModelSettings(source="m", int8_reduce_range=True)


def test_placement_carries_the_int8_scheme_and_its_reason(tmp_path: Path) -> None:
    avx2 = choose_placement("cpu", "auto", "int8", cpu_flags=set(AMD_EPYC_AVX2.split()))
    assert avx2.quantize_int8 and avx2.int8 is not None and avx2.int8.reduce_range
    assert avx2.label == "int8 (reduce_range)"
    assert any("no VNNI/AMX" in reason for reason in avx2.reasons)
    amx = choose_placement("cpu", "auto", "int8", cpu_flags=set(SAPPHIRE_RAPIDS.split()))
    assert amx.label == "int8" and any("amx_int8" in reason for reason in amx.reasons)
    assert choose_placement("cpu", "bfloat16", cpu_flags=set(SAPPHIRE_RAPIDS.split())).label == "bfloat16"
    assert choose_placement("cpu", "float32").label == "float32"
    assert amx.float32("fallback").label == "float32"
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor : 0\nflags\t\t: {ALDER_LAKE}\n")
    assert read_cpu_flags(cpuinfo) == set(ALDER_LAKE.split())


def test_judge_measures_the_gap_and_the_top_order() -> None:
    reference = [0.9, 0.8, 0.7, 0.1]
    assert judge([0.91, 0.8, 0.69, 0.1], reference, 0.02).within
    wide = judge([0.95, 0.8, 0.7, 0.1], reference, 0.02)
    assert wide.max_abs_delta == pytest.approx(0.05) and wide.order_kept and not wide.within
    swapped = judge([0.79, 0.8, 0.7, 0.1], reference, 0.2)
    assert not swapped.order_kept and not swapped.within
    # Below the tie margin the float32 order is rounding noise, not a ranking.
    assert not order_changed([0.5, 0.50001], [0.50001, 0.5])
    # A passage outside the top k rising into it changes the top k.
    assert order_changed([0.9, 0.8, 0.95], [0.9, 0.8, 0.1], k=2)
    assert not order_changed([0.9, 0.8, 0.2, 0.3], [0.9, 0.8, 0.3, 0.2], k=2)
    with pytest.raises(ValueError):
        judge([0.1], [0.1, 0.2], 0.02)


def test_check_set_is_enough_for_a_top_10() -> None:
    assert 12 <= len(CHECK_PASSAGES) <= 16 and CHECK_QUERY
    assert len({len(p) for p in CHECK_PASSAGES}) == len(CHECK_PASSAGES)


@pytest.mark.parametrize("reduce_range", [True, False])
def test_both_int8_ranges_run_on_this_cpu(tiny_ce: Path, reduce_range: bool) -> None:
    """The reduce_range path is forced here (this CPU would choose full range when it has VNNI)."""
    from transformers import AutoModelForSequenceClassification

    before = torch.backends.quantized.engine
    reference = AutoModelForSequenceClassification.from_pretrained(tiny_ce).eval()
    quantised = loading.quantize_int8(
        AutoModelForSequenceClassification.from_pretrained(tiny_ce).eval(),
        Int8Scheme("fbgemm", reduce_range, ""),
    )
    assert torch.backends.quantized.engine == before
    dynamic = [m for m in quantised.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert dynamic and all(isinstance(m, loading.FullRangeDynamicLinear) is not reduce_range for m in dynamic)
    inputs = {"input_ids": torch.tensor([[2, 10, 20, 3, 30, 40, 3]])}
    with torch.inference_mode():
        a, b = reference(**inputs).logits, quantised(**inputs).logits
    assert torch.allclose(a, b, atol=0.05) and not torch.equal(a, b)


def drifting(monkeypatch: pytest.MonkeyPatch) -> None:
    """int8 that moves every logit by +2: the order stays, the activated scores drift far past 0.02."""
    real = loading.quantize_int8

    def quantize(model: Any, scheme: Int8Scheme | None = None) -> Any:
        with torch.no_grad():
            model.classifier.bias += 2.0
        return real(model, scheme)

    monkeypatch.setattr(model_module, "quantize_int8", quantize)


def guard_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "float32" in r.getMessage()
    ]


def cpu_int8(source: Path, **options: Any) -> ModelSettings:
    return ModelSettings(source=str(source), device="cpu", quantize="int8", warmup=False, **options)


def test_drifting_int8_falls_back_to_float32(
    tiny_ce: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    drifting(monkeypatch)
    exact = CrossEncoderModel("exact", ModelSettings(source=str(tiny_ce), dtype="float32", warmup=False))
    assert exact.precision.precision == "float32" and not exact.precision.checked
    caplog.set_level(logging.INFO)
    model = CrossEncoderModel("tiny", cpu_int8(tiny_ce))
    (warning,) = guard_warnings(caplog)
    report = model.precision
    assert (
        report.checked
        and report.fell_back
        and report.precision == "float32"
        and report.configured.startswith("int8")
    )
    assert report.max_abs_delta is not None and report.max_abs_delta > 0.1
    assert f"{report.max_abs_delta:.4f}" in warning and "falling back to float32" in warning
    assert model.placement.label == "float32" and not model.placement.quantize_int8
    assert not any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.model.modules())
    passages = list(CHECK_PASSAGES[:5])
    assert model.predict(CHECK_QUERY, passages) == pytest.approx(
        exact.predict(CHECK_QUERY, passages), abs=1e-6
    )


def test_drifting_int8_is_kept_with_a_warning_when_inexact_is_allowed(
    tiny_ce: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    drifting(monkeypatch)
    exact = CrossEncoderModel("exact", ModelSettings(source=str(tiny_ce), dtype="float32", warmup=False))
    caplog.set_level(logging.INFO)
    model = CrossEncoderModel("tiny", cpu_int8(tiny_ce, allow_inexact=True))
    (warning,) = guard_warnings(caplog)
    assert "keeping int8" in warning and "allow_inexact" in warning
    report = model.precision
    assert report.checked and not report.fell_back and report.precision.startswith("int8")
    assert report.order_kept  # a constant shift keeps the order: the gap alone failed it
    assert model.placement.quantize_int8
    got, want = model.predict(CHECK_QUERY, ["berlin"]), exact.predict(CHECK_QUERY, ["berlin"])
    assert abs(got[0] - want[0]) > 0.1


def test_int8_within_tolerance_keeps_int8(tiny_ce: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    model = CrossEncoderModel("tiny", cpu_int8(tiny_ce))
    assert guard_warnings(caplog) == []
    report = model.precision
    assert report.checked and not report.fell_back and report.precision == model.placement.label
    assert report.precision.startswith("int8") and report.max_abs_delta is not None
    assert 0 < report.max_abs_delta <= 0.02 and report.tolerance == 0.02
    assert any("within" in r.getMessage() for r in caplog.records)


def test_bfloat16_beyond_a_zero_tolerance_falls_back(tiny_ce: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    settings = ModelSettings(
        source=str(tiny_ce), device="cpu", dtype="bfloat16", precision_tolerance=0, warmup=False
    )
    model = CrossEncoderModel("tiny", settings)
    assert len(guard_warnings(caplog)) == 1
    assert model.precision.configured == "bfloat16" and model.precision.precision == "float32"
    assert model.placement.weights_dtype == torch.float32 and model.placement.autocast is None
    assert all(p.dtype == torch.float32 for p in model.model.parameters())


@pytest.mark.parametrize("allow_inexact", [False, True])
def test_bi_encoder_is_guarded_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, allow_inexact: bool
) -> None:
    source = build_bi_encoder(tmp_path / "bi", seed=5)
    caplog.set_level(logging.INFO)
    settings = ModelSettings(
        kind="bi-encoder",
        source=str(source),
        device="cpu",
        quantize="int8",
        precision_tolerance=0,
        allow_inexact=allow_inexact,
        warmup=False,
    )
    model = BiEncoderModel("bi", settings)
    assert len(guard_warnings(caplog)) == 1
    report = model.precision
    assert report.checked and report.max_abs_delta is not None and report.max_abs_delta > 0
    assert report.fell_back is not allow_inexact
    assert model.placement.quantize_int8 is allow_inexact


class Broken:
    """A model whose float32 twin cannot be loaded."""

    name = "broken"

    def precision_label(self) -> str:
        return "bfloat16"

    def check_scores(self) -> list[float]:
        return [0.5] * 12

    def use_float32(self) -> Callable[[bool], None]:
        raise MemoryError("no room for a float32 copy")


def test_a_check_that_cannot_run_keeps_the_precision_unchecked(caplog: pytest.LogCaptureFixture) -> None:
    report = guard_precision(Broken(), tolerance=0.02, allow_inexact=False, log=logging.getLogger("t"))
    assert (report.precision, report.checked, report.fell_back) == ("bfloat16", False, False)
    assert any("could not run" in r.getMessage() for r in caplog.records)


async def test_ready_and_metrics_show_the_precision(tiny_ce: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drifting(monkeypatch)

    async def engine(request: web.Request) -> web.Response:
        return web.json_response({"version": {"number": "2.19.0"}})

    runner, upstream = await serve(engine)
    scorers = {
        "drifts": LocalScorer("drifts", cpu_int8(tiny_ce)),
        "exact": LocalScorer("exact", ModelSettings(source=str(tiny_ce), dtype="float32", warmup=False)),
    }
    try:
        async with (
            running_bridge(Settings(upstream={"url": upstream}), scorers) as url,
            aiohttp.ClientSession() as http,
        ):
            async with http.get(url + "/_bridge/ready") as response:
                assert response.status == 200
                body = await response.json()
            async with http.get(url + "/_bridge/metrics") as response:
                text = await response.text()
    finally:
        await runner.cleanup()
    drift = body["models"]["drifts"]
    assert drift["precision"] == "float32" and drift["fell_back"] is True and drift["checked"] is True
    assert drift["configured"].startswith("int8") and drift["max_abs_delta"] > 0.1
    assert body["models"]["exact"] == {
        "precision": "float32",
        "configured": "float32",
        "checked": False,
        "max_abs_delta": None,
        "top10_order_kept": None,
        "fell_back": False,
        "tolerance": None,
    }
    assert 'rerank_bridge_model_precision{model="drifts",precision="float32"} 1.0' in text
    assert 'rerank_bridge_model_precision{model="exact",precision="float32"} 1.0' in text
    assert 'rerank_bridge_model_precision_fell_back{model="drifts"} 1.0' in text
    assert f'rerank_bridge_model_precision_max_abs_delta{{model="drifts"}} {drift["max_abs_delta"]}' in text
    assert 'rerank_bridge_model_precision_max_abs_delta{model="exact"}' not in text
