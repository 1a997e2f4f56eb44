"""Configuration defaults that depend on where the bridge runs: a rule's window fits its model's device."""

from __future__ import annotations

import pytest
import torch

from bridge.config import CPU_WINDOW, GPU_WINDOW, Settings


def settings(model: dict[str, object], **rule: object) -> Settings:
    return Settings(
        models={"m": {"source": "/models/m", **model}},
        rules=[{"indices": ["docs"], "fields": ["title"], **rule}],
    )


def test_a_rule_on_a_cpu_model_reranks_a_window_a_cpu_scores_within_the_budget() -> None:
    assert settings({"device": "cpu"}).rules[0].window == CPU_WINDOW == 20


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_a_rule_on_a_gpu_model_reranks_the_top_100(device: str) -> None:
    assert settings({"device": device}).rules[0].window == GPU_WINDOW == 100


def test_auto_follows_the_device_torch_sees(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert settings({}).rules[0].window == CPU_WINDOW
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert settings({}).rules[0].window == GPU_WINDOW


def test_a_remote_model_and_an_explicit_window_keep_theirs() -> None:
    assert settings({"remote": {"url": "http://127.0.0.1:8080"}}).rules[0].window == GPU_WINDOW
    assert settings({"device": "cpu"}, window=50).rules[0].window == 50


def test_ext_rerank_without_a_rule_gets_the_models_default_window() -> None:
    from bridge.search.plan import Plan, plan_search
    from bridge.search.request import QueryString

    config = Settings(models={"m": {"source": "/models/m", "device": "cpu"}})
    body = {"query": {"match": {"title": "car"}}, "ext": {"rerank": {"enabled": True, "fields": ["title"]}}}
    plan = plan_search(config, "docs", QueryString(()), body)
    assert isinstance(plan, Plan) and plan.window == CPU_WINDOW
