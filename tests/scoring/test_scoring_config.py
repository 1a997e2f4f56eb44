"""Resolving activation/label from model configs, and device/dtype choices: pure functions, no model loads."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bridge.scoring.activation import resolve_output
from bridge.scoring.base import ModelConfigError
from bridge.scoring.device import choose_placement, cpu_bf16_flags

LOGITS_1 = torch.tensor([[-2.0], [0.5], [3.0]])
LOGITS_3 = torch.tensor([[2.0, 0.0, -1.0], [-1.0, 3.0, 0.5]])


def config(labels: tuple[str, ...] = ("relevance",), **extra: object) -> SimpleNamespace:
    return SimpleNamespace(num_labels=len(labels), id2label=dict(enumerate(labels)), **extra)


def test_one_label_default_is_sigmoid():
    rule = resolve_output(config())
    assert torch.allclose(rule.scores(LOGITS_1), torch.sigmoid(LOGITS_1[:, 0]))
    assert "sigmoid" in rule.description


@pytest.mark.parametrize(
    ("cfg", "st_config", "expected"),
    [
        # config.json sentence_transformers.activation_fn (sentence-transformers 4)
        (
            config(sentence_transformers={"activation_fn": "torch.nn.modules.linear.Identity"}),
            None,
            "identity",
        ),
        # legacy key (sentence-transformers < 4)
        (config(sbert_ce_default_activation_function="torch.nn.modules.linear.Identity"), None, "identity"),
        # config_sentence_transformers.json (sentence-transformers 5+) wins over config.json
        (
            config(sentence_transformers={"activation_fn": "torch.nn.modules.linear.Identity"}),
            {"activation_fn": "torch.nn.modules.activation.Sigmoid"},
            "sigmoid",
        ),
        (config(sentence_transformers={"activation_fn": "torch.nn.modules.activation.Tanh"}), None, "tanh"),
    ],
)
def test_auto_follows_the_activation_the_model_names(cfg, st_config, expected):
    rule = resolve_output(cfg, st_config=st_config)
    want = {
        "identity": LOGITS_1[:, 0],
        "sigmoid": torch.sigmoid(LOGITS_1[:, 0]),
        "tanh": torch.tanh(LOGITS_1[:, 0]),
    }
    assert torch.allclose(rule.scores(LOGITS_1), want[expected])


def test_untrusted_activation_path_is_ignored_like_sentence_transformers(caplog):
    cfg = config(sentence_transformers={"activation_fn": "mypackage.CustomActivation"})
    with caplog.at_level(logging.WARNING):
        rule = resolve_output(cfg, model="m")
    assert torch.allclose(rule.scores(LOGITS_1), torch.sigmoid(LOGITS_1[:, 0]))
    assert "trust_remote_code" in caplog.text
    with pytest.raises(ModelConfigError, match="cannot be imported"):
        resolve_output(cfg, trust_remote_code=True)
    trusted = resolve_output(
        config(sentence_transformers={"activation_fn": "torch.nn.Identity"}), trust_remote_code=True
    )
    assert torch.allclose(trusted.scores(LOGITS_1), LOGITS_1[:, 0])


def test_forced_activations():
    assert torch.allclose(resolve_output(config(), activation="identity").scores(LOGITS_1), LOGITS_1[:, 0])
    named_identity = config(sentence_transformers={"activation_fn": "torch.nn.modules.linear.Identity"})
    forced = resolve_output(named_identity, activation="sigmoid").scores(LOGITS_1)
    assert torch.allclose(forced, torch.sigmoid(LOGITS_1[:, 0]))
    with pytest.raises(ModelConfigError, match=r"always 1\.0"):
        resolve_output(config(), activation="softmax")


def test_multi_label_softmax_and_label_choice():
    nli = config(("contradiction", "entailment", "neutral"))
    probabilities = torch.softmax(LOGITS_3, dim=1)
    for index, label in enumerate(("contradiction", "entailment", "neutral")):
        rule = resolve_output(nli, label=label)
        assert torch.allclose(rule.scores(LOGITS_3), probabilities[:, index])
        assert torch.allclose(rule.probabilities(LOGITS_3), probabilities)
    assert resolve_output(nli, label="ENTAILMENT").label_index == 1
    raw = resolve_output(nli, label="entailment", activation="identity")
    assert torch.allclose(raw.scores(LOGITS_3), LOGITS_3[:, 1])
    # An activation the model names runs first, then the softmax: CrossEncoder.predict(apply_softmax=True).
    named = config(
        ("a", "b", "c"), sentence_transformers={"activation_fn": "torch.nn.modules.activation.Sigmoid"}
    )
    rule = resolve_output(named, label="b")
    assert torch.allclose(rule.scores(LOGITS_3), torch.softmax(torch.sigmoid(LOGITS_3), dim=1)[:, 1])


def test_multi_label_errors_name_the_labels():
    nli = config(("contradiction", "entailment", "neutral"))
    with pytest.raises(
        ModelConfigError, match="no label 'entails'; its labels are: contradiction, entailment"
    ):
        resolve_output(nli, label="entails")
    with pytest.raises(
        ModelConfigError, match=r"3 labels \(contradiction, entailment, neutral\); set `label`"
    ):
        resolve_output(nli)
    unnamed = SimpleNamespace(num_labels=2, id2label={})
    with pytest.raises(ModelConfigError, match="LABEL_0, LABEL_1"):
        resolve_output(unnamed, label="yes")


def test_cpu_dtype_auto_uses_bf16_autocast_only_with_amx_or_avx512_bf16():
    with_amx = choose_placement("cpu", "auto", cpu_flags={"amx_bf16"})
    assert with_amx.weights_dtype == torch.bfloat16 and with_amx.autocast == torch.bfloat16
    assert any("amx_bf16" in reason for reason in with_amx.reasons)
    without = choose_placement("cpu", "auto", cpu_flags=set())
    assert without.autocast is None and without.weights_dtype == torch.float32
    assert any("neither AMX nor AVX512-BF16" in reason for reason in without.reasons)
    forced = choose_placement("cpu", "float32", cpu_flags={"amx_bf16"})
    assert forced.autocast is None and forced.weights_dtype == torch.float32
    int8 = choose_placement("cpu", "auto", "int8", cpu_flags={"amx_bf16"})
    assert int8.quantize_int8 and int8.autocast is None
    with pytest.raises(ValueError, match="CPU"):  # "meta" exists on every machine, unlike cuda
        choose_placement("meta", "auto", "int8")


def test_device_auto_on_this_machine_is_logged_with_a_reason():
    placement = choose_placement("auto", "auto")
    expected = "cuda" if torch.cuda.is_available() else placement.device.type
    assert placement.device.type == expected
    assert placement.reasons[0].startswith("device auto:")
    assert placement.reasons[1].startswith("dtype auto:")


def test_cpu_flags_read_from_cpuinfo(tmp_path: Path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor : 0\nflags : fpu sse avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert cpu_bf16_flags(cpuinfo) == {"avx512_bf16", "amx_bf16"}
    cpuinfo.write_text("processor : 0\nflags : fpu sse avx2\n")
    assert cpu_bf16_flags(cpuinfo) == set()
