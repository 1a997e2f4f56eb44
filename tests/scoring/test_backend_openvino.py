"""``backend: openvino``: the same scores as torch float32, an export converted once and cached, rebuilt when
corrupt or stale, the precision guard on bf16, the refusals, and a search through a bridge that runs it."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import torch

from bridge.config import Settings
from bridge.scoring.base import ModelConfigError
from bridge.scoring.device import cpu_bf16_flags
from bridge.scoring.local import LocalScorer
from bridge.scoring.model import CrossEncoderModel
from bridge.scoring.preflight import backend_problem, check_model
from bridge.scoring.settings import ModelSettings
from tests.bridge_server import running_bridge
from tests.cranfield import cranfield_index
from tests.indices import scratch_name

ov_engine = pytest.importorskip("bridge.scoring.backends.openvino_engine")
pytest.importorskip("openvino")

OpenVinoCrossEncoder = ov_engine.OpenVinoCrossEncoder

QUERY = "how many people live in berlin"
WORDS = (
    "berlin population city people live registered inhabitants area museums known paris capital the of and a "
    "in is was for million square kilometers weather sunny aircraft wing flow pressure"
).split()


def passages(count: int, longest: int) -> list[str]:
    """Deterministic passages from 1 word to ``longest`` words: every batch has rows of many lengths."""
    out = []
    for i in range(count):
        n = 1 + (i * 37) % longest
        out.append(" ".join(WORDS[(i + 3 * j) % len(WORDS)] for j in range(n)))
    return out


def same_order(got: Sequence[float], want: Sequence[float], tie: float = 1e-5) -> bool:
    """The two score lists rank the passages the same (scores within ``tie`` of each other count as tied)."""
    return not any(
        want[a] > want[b] + tie and got[a] <= got[b] for a in range(len(want)) for b in range(len(want))
    )


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ov-exports")


def ov_settings(source: Path, export_dir: Path, **options: Any) -> ModelSettings:
    options.setdefault("dtype", "float32")
    options.setdefault("warmup", False)
    return ModelSettings(source=str(source), backend="openvino", export_dir=str(export_dir), **options)


def torch_settings(source: Path, **options: Any) -> ModelSettings:
    return ModelSettings(source=str(source), dtype="float32", warmup=False, **options)


# -- scores -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{}, {"long_documents": "chunk", "max_length": 40, "chunk_stride": 8}],
    ids=["truncate", "chunked"],
)
def test_tiny_model_scores_equal_torch_float32(
    tiny_ce: Path, export_dir: Path, options: dict[str, Any]
) -> None:
    texts = passages(40, 200 if options else 120)
    reference = CrossEncoderModel("torch", torch_settings(tiny_ce, **options))
    engine = OpenVinoCrossEncoder("ov", ov_settings(tiny_ce, export_dir, **options))
    try:
        assert engine.computes == "float32"
        if options:  # long passages really are chunked into several windows
            assert len(engine.encode(QUERY, texts)) > len(texts)
        want, got = reference.predict(QUERY, texts), engine.predict(QUERY, texts)
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) <= 1e-4
        assert same_order(got, want)
    finally:
        engine.close()
        reference.close()


async def test_shared_model_through_the_scorer_equals_torch_float32(
    shared_model: Path, export_dir: Path
) -> None:
    texts = passages(60, 400)  # up to 400 words: some are truncated at 512 tokens
    reference = CrossEncoderModel("torch", torch_settings(shared_model))
    want = reference.predict(QUERY, texts)
    reference.close()
    scorer = LocalScorer("ov", ov_settings(shared_model, export_dir, cache_size=0, warmup=True))
    await scorer.start()
    try:
        assert scorer.model is not None and scorer.model.backend == "openvino"
        got = await scorer.score(QUERY, texts)
        assert scorer.stats.batches > 1  # the batcher's own batches, several lengths each
    finally:
        await scorer.close()
    assert max(abs(a - b) for a, b in zip(got, want, strict=True)) <= 1e-4
    assert same_order(got, want)


# -- the export cache ---------------------------------------------------------------------------------------------


def copy_model(source: Path, directory: Path) -> Path:
    shutil.copytree(source, directory)
    return directory


def test_a_second_start_reuses_the_export(tiny_ce: Path, tmp_path: Path) -> None:
    first = OpenVinoCrossEncoder("a", ov_settings(tiny_ce, tmp_path))
    assert not first.export.reused and first.export.why_built == "no export yet"
    xml = first.export.path / "model.xml"
    stamp = xml.stat().st_mtime_ns
    scores = first.predict(QUERY, passages(8, 30))
    first.close()
    second = OpenVinoCrossEncoder("b", ov_settings(tiny_ce, tmp_path, dtype="bfloat16"))
    try:
        assert second.export.reused and second.export.path == first.export.path
        assert xml.stat().st_mtime_ns == stamp
        # One export for every precision: the IR is float32, the precision a compile-time hint.
        assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == [first.export.path.name]
        manifest = json.loads((first.export.path / "manifest.json").read_text())
        assert manifest["bin_bytes"] == (first.export.path / "model.bin").stat().st_size
        again = OpenVinoCrossEncoder("c", ov_settings(tiny_ce, tmp_path))
        assert again.export.reused and again.predict(QUERY, passages(8, 30)) == scores
        again.close()
    finally:
        second.close()


@pytest.mark.parametrize("damage", ["truncated weights", "garbage IR", "no manifest"])
def test_a_corrupt_export_is_rebuilt(tiny_ce: Path, tmp_path: Path, damage: str) -> None:
    first = OpenVinoCrossEncoder("a", ov_settings(tiny_ce, tmp_path))
    want = first.predict(QUERY, passages(8, 30))
    path = first.export.path
    first.close()
    if damage == "truncated weights":
        (path / "model.bin").write_bytes((path / "model.bin").read_bytes()[:100])
    elif damage == "garbage IR":
        (path / "model.xml").write_text("<net><layers>", encoding="utf-8")
    else:
        (path / "manifest.json").unlink()
    rebuilt = OpenVinoCrossEncoder("b", ov_settings(tiny_ce, tmp_path))
    try:
        assert not rebuilt.export.reused and rebuilt.export.why_built not in (None, "no export yet")
        assert rebuilt.export.path == path
        assert rebuilt.predict(QUERY, passages(8, 30)) == pytest.approx(want, abs=1e-6)
    finally:
        rebuilt.close()
    assert ov_engine.cache_problem(path, json.loads((path / "manifest.json").read_text())["key"]) is None


def test_an_export_finished_meanwhile_by_another_process_is_kept(tiny_ce: Path, tmp_path: Path) -> None:
    engine = OpenVinoCrossEncoder("a", ov_settings(tiny_ce, tmp_path))
    try:
        path = engine.export.path
        key = json.loads((path / "manifest.json").read_text())["key"]
        stamp = (path / "model.xml").stat().st_mtime_ns
        # This start found no export, converted, and meanwhile another start (same key) moved its own in place.
        engine._convert(
            tmp_path, path, key, {}, ["input_ids", "attention_mask", "token_type_ids"], replace=False
        )
        assert (path / "model.xml").stat().st_mtime_ns == stamp
        assert [p.name for p in tmp_path.iterdir()] == [path.name]  # the scratch export was dropped
    finally:
        engine.close()


def test_changed_weights_make_a_new_export(tiny_ce: Path, tmp_path: Path) -> None:
    model = copy_model(tiny_ce, tmp_path / "model")
    first = OpenVinoCrossEncoder("a", ov_settings(model, tmp_path / "exports"))
    before = first.predict(QUERY, passages(8, 30))
    first.close()
    # Retrain in place (new weights, same file name): the old export is stale and must not be read.
    from transformers import AutoModelForSequenceClassification

    changed = AutoModelForSequenceClassification.from_pretrained(model)
    with torch.no_grad():
        changed.classifier.bias += 1.0
    changed.save_pretrained(model)
    second = OpenVinoCrossEncoder("b", ov_settings(model, tmp_path / "exports"))
    reference = CrossEncoderModel("t", torch_settings(model))
    try:
        assert not second.export.reused and second.export.path != first.export.path
        got, want = second.predict(QUERY, passages(8, 30)), reference.predict(QUERY, passages(8, 30))
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) <= 1e-4
        assert max(abs(a - b) for a, b in zip(got, before, strict=True)) > 0.01
    finally:
        second.close()
        reference.close()


def test_export_key_and_cache_problem_are_pure(tmp_path: Path) -> None:
    files = [("config.json", 10, 1), ("model.safetensors", 100, 2)]
    versions = {"openvino": "2026.4", "transformers": "5.24", "torch": "2.15"}
    key = ov_engine.export_key(files, versions, ["input_ids", "attention_mask"])
    assert key == ov_engine.export_key(files, dict(versions), ["input_ids", "attention_mask"])
    assert key != ov_engine.export_key(
        [("config.json", 10, 1), ("model.safetensors", 100, 3)], versions, ["input_ids", "attention_mask"]
    )
    assert key != ov_engine.export_key(
        files, {**versions, "openvino": "2027.0"}, ["input_ids", "attention_mask"]
    )
    assert key != ov_engine.export_key(files, versions, ["input_ids", "attention_mask", "token_type_ids"])
    assert ov_engine.cache_problem(tmp_path / "missing", key) == "no export yet"
    (tmp_path / "manifest.json").write_text(json.dumps({"key": "other"}))
    assert ov_engine.cache_problem(tmp_path, key) == "manifest of another export"
    # Only config.json and the weights decide the graph (the tokenizer runs in the bridge).
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md"):
        (tmp_path / name).write_text(name)
    assert [name for name, _, _ in ov_engine.graph_files(tmp_path)] == ["config.json", "model.safetensors"]


def test_default_export_dir_is_the_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert ov_engine.default_export_dir() == tmp_path / "rerank-bridge" / "openvino"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert ov_engine.default_export_dir() == Path.home() / ".cache" / "rerank-bridge" / "openvino"


# -- precision ----------------------------------------------------------------------------------------------------


def test_precision_hints_follow_dtype() -> None:
    amx = {"avx512f", "amx_bf16", "avx512_bf16"}
    assert ov_engine.choose_ov_precision("float32", amx).hint == "f32"  # explicit: OpenVINO's default is bf16
    assert ov_engine.choose_ov_precision("auto", amx).hint == "bf16"
    assert ov_engine.choose_ov_precision("auto", {"avx2"}).hint == "f32"
    assert ov_engine.choose_ov_precision("bfloat16", amx).warnings == ()
    assert "float32 instead" in ov_engine.choose_ov_precision("bfloat16", {"avx2"}).warnings[0]
    assert ov_engine.choose_ov_precision("float16", amx).hint == "f16"


needs_bf16 = pytest.mark.skipif(
    not cpu_bf16_flags(), reason="OpenVINO computes bf16 only on AMX/AVX512-BF16 CPUs"
)


@needs_bf16
def test_bf16_is_checked_against_openvino_float32(shared_model: Path, export_dir: Path) -> None:
    engine = OpenVinoCrossEncoder("ov", ov_settings(shared_model, export_dir, dtype="bfloat16"))
    try:
        report = engine.precision
        assert engine.computes == "bfloat16" and report.precision == "bfloat16"
        assert report.checked and report.order_kept and not report.fell_back
        assert report.max_abs_delta is not None and 0 < report.max_abs_delta <= 0.02
    finally:
        engine.close()


def drifting_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 whose logits move by +2: the order stays, the activated scores drift far past 0.02."""
    real = OpenVinoCrossEncoder.logits

    def logits(self: Any, batch: Any) -> torch.Tensor:
        out = real(self, batch)
        return out + 2.0 if self.computes != "float32" else out

    monkeypatch.setattr(OpenVinoCrossEncoder, "logits", logits)


@needs_bf16
def test_drifting_bf16_falls_back_to_float32(
    tiny_ce: Path, export_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    drifting_bf16(monkeypatch)
    exact = OpenVinoCrossEncoder("exact", ov_settings(tiny_ce, export_dir))
    want = exact.predict(QUERY, passages(8, 30))
    exact.close()
    with caplog.at_level(logging.WARNING):
        engine = OpenVinoCrossEncoder("ov", ov_settings(tiny_ce, export_dir, dtype="bfloat16"))
    try:
        report = engine.precision
        assert report.configured == "bfloat16" and report.precision == "float32" and report.fell_back
        assert engine.computes == "float32"
        assert engine.predict(QUERY, passages(8, 30)) == pytest.approx(want, abs=1e-6)
        assert any("falling back to float32" in r.getMessage() for r in caplog.records)
    finally:
        engine.close()


@needs_bf16
def test_drifting_bf16_is_kept_with_allow_inexact(
    tiny_ce: Path, export_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    drifting_bf16(monkeypatch)
    with caplog.at_level(logging.WARNING):
        engine = OpenVinoCrossEncoder(
            "ov", ov_settings(tiny_ce, export_dir, dtype="bfloat16", allow_inexact=True)
        )
    try:
        report = engine.precision
        assert report.precision == "bfloat16" and not report.fell_back and report.max_abs_delta > 0.02
        assert engine.computes == "bfloat16"
        assert any("keeping bfloat16 because allow_inexact" in r.getMessage() for r in caplog.records)
    finally:
        engine.close()


# -- refusals -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"quantize": "int8"}, "NNCF"),
        ({"kind": "bi-encoder"}, "kind bi-encoder"),
        ({"device": "cuda"}, "runs on the CPU"),
        ({"remote": {"url": "http://127.0.0.1:1/rerank"}}, "remote"),
    ],
)
def test_openvino_refuses_what_it_cannot_do(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelSettings(source="x", backend="openvino", **options)


def test_export_dir_needs_backend_openvino() -> None:
    with pytest.raises(ValueError, match="export_dir applies to backend: openvino only"):
        ModelSettings(source="x", export_dir="/tmp/x")


def test_missing_openvino_is_a_clear_error(
    tiny_ce: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real_find_spec(name, *a)
    )
    settings = ov_settings(tiny_ce, tmp_path)
    problem = backend_problem(settings)
    assert problem is not None and "pip install openvino" in problem
    assert any(
        f.where == "models.m.backend" and "pip install openvino" in f.message
        for f in check_model("m", settings)
    )
    assert backend_problem(torch_settings(tiny_ce)) is None
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(ModelConfigError, match="pip install openvino"):
        OpenVinoCrossEncoder("m", settings)


def test_config_check_gives_openvinos_precision_warnings(tiny_ce: Path, tmp_path: Path) -> None:
    settings = ov_settings(tiny_ce, tmp_path, dtype="bfloat16")
    findings = check_model("m", settings, cpu_flags={"avx2"})
    assert [f.message for f in findings if not f.error] == [
        "the CPU has neither AMX nor AVX512-BF16: OpenVINO computes in float32 instead"
    ]
    assert not [f for f in findings if f.error]
    # torch's own warning for the same dtype (bf16 emulated, ~5x slower) is about torch: not given here.
    assert any(
        "emulated" in f.message
        for f in check_model(
            "m", torch_settings(tiny_ce).model_copy(update={"dtype": "bfloat16"}), cpu_flags={"avx2"}
        )
    )


# -- end to end ---------------------------------------------------------------------------------------------------

INDEX = scratch_name("ov-cranfield")
WINDOW = 20


@pytest.fixture(scope="module")
async def cranfield(opensearch_url: str, shared_dir: Path) -> AsyncIterator[list[str]]:
    async with cranfield_index(opensearch_url, shared_dir, INDEX, queries=2, lines=400) as queries:
        yield queries


@pytest.mark.engine
@pytest.mark.slow
async def test_search_through_a_bridge_with_backend_openvino(
    opensearch_url: str, shared_model: Path, export_dir: Path, cranfield: list[str]
) -> None:
    model = {
        "source": str(shared_model),
        "backend": "openvino",
        "export_dir": str(export_dir),
        "dtype": "float32",
    }
    settings = Settings(
        upstream={"url": opensearch_url},
        models={"minilm": {**model, "cache_size": 0}},
        rules=[{"indices": [INDEX], "fields": ["title", "text"], "window": WINDOW, "timeout_ms": 60000}],
    )
    reference = CrossEncoderModel("torch", torch_settings(shared_model))
    try:
        async with running_bridge(settings) as bridge, aiohttp.ClientSession() as http:
            async with http.get(f"{bridge}/_bridge/ready") as response:
                assert response.status == 200
                ready = (await response.json())["models"]["minilm"]
            assert ready["backend"] == "openvino" and ready["precision"] == "float32"
            for query in cranfield:
                body = {
                    "query": {"multi_match": {"query": query, "fields": ["title", "text"]}},
                    "size": WINDOW,
                }
                async with http.post(f"{opensearch_url}/{INDEX}/_search", json=body) as response:
                    engine_hits = (await response.json())["hits"]["hits"]
                async with http.post(f"{bridge}/{INDEX}/_search", json=body) as response:
                    assert response.status == 200
                    assert response.headers["X-Rerank"].startswith("applied; model=minilm")
                    bridged = (await response.json())["hits"]["hits"]
                texts = [f"{h['_source']['title']}\n{h['_source']['text']}" for h in engine_hits]
                want = dict(
                    zip((h["_id"] for h in engine_hits), reference.predict(query, texts), strict=True)
                )
                assert sorted(want) == sorted(h["_id"] for h in bridged)
                for hit in bridged:
                    assert hit["_score"] == pytest.approx(want[hit["_id"]], abs=1e-4)
                got = [h["_score"] for h in bridged]
                assert same_order(got, [want[h["_id"]] for h in bridged])
                assert got == sorted(got, reverse=True)
    finally:
        reference.close()
    assert os.listdir(export_dir)
