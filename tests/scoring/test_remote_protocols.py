"""The remote wire formats as pure functions: payloads, answers read and refused, activations, error bodies."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
from pydantic import ValidationError

from bridge.scoring import ModelConfigError, ModelSettings, RemoteSettings
from bridge.scoring.remote_protocols import (
    LOGIT_EPS,
    BadAnswer,
    CohereProtocol,
    ScoreConversion,
    TEIProtocol,
    build_protocol,
    error_message,
    retry_after,
)


def model(activation: str = "auto", **remote: Any) -> ModelSettings:
    return ModelSettings(
        source="remote-model",
        activation=activation,  # type: ignore[arg-type]
        remote=RemoteSettings(**{"url": "http://127.0.0.1:7997/rerank", **remote}),
    )


def cohere(activation: str = "auto", **remote: Any) -> ModelSettings:
    return model(activation, protocol="cohere", model="minilm", **remote)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_tei_asks_for_the_activation_the_bridge_wants() -> None:
    raw = build_protocol("m", model("identity"))
    squashed = build_protocol("m", model("sigmoid"))
    assert isinstance(raw, TEIProtocol) and isinstance(squashed, TEIProtocol)
    assert raw.payload("q", ["a", "b"]) == {
        "query": "q",
        "texts": ["a", "b"],
        "raw_scores": True,
        "truncate": True,
    }
    assert squashed.payload("q", ["a"])["raw_scores"] is False
    assert build_protocol("m", model()).payload("q", ["a"])["raw_scores"] is False, "auto is TEI's sigmoid"
    assert raw.scores([{"index": 1, "score": 0.5}, {"index": 0, "score": -1.0}], 2) == [-1.0, 0.5]


def test_cohere_payload_names_the_model_and_asks_for_every_score() -> None:
    protocol = build_protocol("m", cohere())
    assert protocol.payload("q", ["a", "b", "c"]) == {
        "model": "minilm",
        "query": "q",
        "documents": ["a", "b", "c"],
        "top_n": 3,
        "return_documents": False,
    }
    assert protocol.endpoint("http://h:1/v2/rerank") == "http://h:1/v2/rerank", "the URL is used as given"
    with_raw = build_protocol("m", cohere("identity", raw_scores=True))
    assert with_raw.payload("q", ["a"])["raw_scores"] is True


def test_cohere_answers_in_any_order_are_mapped_back_to_the_texts() -> None:
    protocol = build_protocol("m", cohere())
    answer = {
        "results": [
            {"index": 2, "relevance_score": 0.9},
            {"index": 0, "relevance_score": 0.1},
            {"index": 1, "relevance_score": 0.5, "document": {"text": "b"}},
        ],
        "id": "x",
    }
    assert protocol.scores(answer, 3) == [0.1, 0.5, 0.9]
    voyage = {"object": "list", "data": [{"index": 0, "relevance_score": 0.25}]}
    assert protocol.scores(voyage, 1) == [0.25]


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ([{"index": 0, "relevance_score": 0.1}], "expected an object"),
        ({"meta": {}}, "no results"),
        ({"results": {"index": 0}}, "expected a list"),
        ({"results": [{"index": 0, "relevance_score": 0.1}]}, "answered 1 of 2 texts"),
        ({"results": [{"index": 0, "relevance_score": 0.1}] * 2}, "scored twice"),
        (
            {"results": [{"index": 0, "relevance_score": 0.1}, {"index": 2, "relevance_score": 0.2}]},
            "out of range",
        ),
        (
            {"results": [{"index": -1, "relevance_score": 0.1}, {"index": 0, "relevance_score": 0.2}]},
            "out of range",
        ),
        (
            {"results": [{"index": "0", "relevance_score": 0.1}, {"index": 1, "relevance_score": 0.2}]},
            "no integer",
        ),
        (
            {"results": [{"index": True, "relevance_score": 0.1}, {"index": 1, "relevance_score": 0.2}]},
            "no integer",
        ),
        (
            {"results": [{"index": 0, "relevance_score": "0.1"}, {"index": 1, "relevance_score": 0.2}]},
            "not a number",
        ),
        (
            {"results": [{"index": 0, "relevance_score": None}, {"index": 1, "relevance_score": 0.2}]},
            "not a number",
        ),
        (
            {"results": [{"index": 0, "relevance_score": math.nan}, {"index": 1, "relevance_score": 0.2}]},
            "not finite",
        ),
        (
            {"results": [{"index": 0, "score": 0.1}, {"index": 1, "relevance_score": 0.2}]},
            "no 'relevance_score'",
        ),
        ({"results": [0.1, 0.2]}, "not an object"),
    ],
)
def test_cohere_answers_that_do_not_score_every_text_once_are_refused(answer: Any, problem: str) -> None:
    with pytest.raises(BadAnswer, match=problem):
        build_protocol("m", cohere()).scores(answer, 2)


def test_tei_answers_are_checked_the_same_way() -> None:
    protocol = build_protocol("m", model())
    with pytest.raises(BadAnswer, match="answered 1 of 2"):
        protocol.scores([{"index": 0, "score": 0.3}], 2)
    with pytest.raises(BadAnswer, match="expected a list"):
        protocol.scores({"results": []}, 1)


def test_activation_conversion_between_server_and_bridge() -> None:
    to_logit = ScoreConversion(served="sigmoid", wanted="identity")
    to_probability = ScoreConversion(served="identity", wanted="sigmoid")
    for logit in (-9.0, -2.5, 0.0, 0.7, 6.0):
        assert to_logit(sigmoid(logit)) == pytest.approx(logit, abs=1e-9)
        assert to_probability(logit) == pytest.approx(sigmoid(logit))
    assert to_probability(-800.0) == 0.0 and to_probability(800.0) == 1.0, "no overflow"
    ceiling = math.log((1 - LOGIT_EPS) / LOGIT_EPS)
    assert to_logit(1.0) == pytest.approx(ceiling) and to_logit(0.0) == pytest.approx(-ceiling)
    assert 16 < ceiling < 17, "a float32 sigmoid saturates near logit 16.6"
    assert ScoreConversion("sigmoid", "sigmoid")(0.3) == 0.3


@pytest.mark.parametrize(
    ("activation", "remote", "served", "wanted"),
    [
        ("auto", {}, "sigmoid", "sigmoid"),
        ("sigmoid", {}, "sigmoid", "sigmoid"),
        ("identity", {}, "sigmoid", "identity"),
        ("identity", {"raw_scores": True}, "identity", "identity"),
        ("sigmoid", {"raw_scores": True}, "identity", "sigmoid"),
        ("sigmoid", {"score_activation": "identity"}, "identity", "sigmoid"),
    ],
)
def test_cohere_conversion_follows_the_settings(
    activation: str, remote: dict[str, Any], served: str, wanted: str
) -> None:
    protocol = build_protocol("m", cohere(activation, **remote))
    assert isinstance(protocol, CohereProtocol)
    assert protocol.conversion == ScoreConversion(served, wanted)  # type: ignore[arg-type]


@pytest.mark.parametrize("update", [{"activation": "softmax"}, {"label": "entailment"}])
@pytest.mark.parametrize("settings", [model(), cohere()])
def test_what_no_remote_server_can_give_is_refused(update: dict[str, Any], settings: ModelSettings) -> None:
    with pytest.raises(ModelConfigError, match="remote"):
        build_protocol("m", settings.model_copy(update=update))


@pytest.mark.parametrize(
    ("remote", "problem"),
    [
        ({"protocol": "cohere"}, "needs `model`"),
        ({"model": "x"}, "model applies to protocol: cohere only"),
        ({"raw_scores": True, "score_activation": "identity"}, "apply to protocol: cohere only"),
        ({"protocol": "cohere", "model": "x", "raw_scores": True, "score_activation": "sigmoid"}, "logit"),
        ({"urls": ["http://a:1/rerank"]}, "not both"),
        ({"url": None, "urls": []}, "empty"),
        ({"url": None, "urls": ["http://a:1/rerank", "http://a:1/rerank/"]}, "twice"),
        ({"url": None}, "not neither"),
        ({"protocol": "cohere", "model": ""}, "at least 1 character"),
        ({"eject_s": 0}, "greater than 0"),
    ],
)
def test_remote_settings_refuse_contradictions(remote: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        RemoteSettings(**{"url": "http://127.0.0.1:7997/rerank", **remote})


def test_urls_keep_their_order() -> None:
    remote = RemoteSettings(urls=["http://b:2/rerank", "http://a:1/rerank"], protocol="cohere", model="m")
    assert remote.endpoint_urls == ["http://b:2/rerank", "http://a:1/rerank"]
    assert RemoteSettings(url="http://a:1").endpoint_urls == ["http://a:1/"]


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (
            413,
            '{"error": "batch size 40 > maximum allowed batch size 32", "error_type": "validation"}',
            "HTTP 413: batch size 40 > maximum allowed batch size 32",
        ),  # TEI
        (
            400,
            '{"error": {"message": "model `x` not deployed", "type": null, "code": 400}}',
            "HTTP 400: model `x` not deployed",
        ),  # infinity, vLLM
        (401, '{"message": "invalid api token"}', "HTTP 401: invalid api token"),  # Cohere
        (422, '{"detail": "Model jina-x not found"}', "HTTP 422: Model jina-x not found"),  # Jina
        (
            422,
            '{"detail": [{"loc": ["body", "query"], "msg": "Field required"}, {"msg": "too long"}]}',
            "HTTP 422: Field required; too long",
        ),  # FastAPI validation
        (502, "<html>\n  Bad   gateway</html>", "HTTP 502: <html> Bad gateway</html>"),
        (500, "", "HTTP 500: (empty body)"),
    ],
)
def test_error_messages_show_what_the_server_said(status: int, body: str, message: str) -> None:
    assert error_message(status, body) == message


def test_error_messages_are_bounded() -> None:
    assert len(error_message(500, "x" * 10_000)) < 320


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after("2") == 2.0 and retry_after("0.25") == 0.25 and retry_after("-3") == 0.0
    assert retry_after(None) is None and retry_after("soon") is None
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    date = format_datetime(datetime(2026, 1, 1, 12, 0, 7, tzinfo=UTC), usegmt=True)
    assert retry_after(date, now=now) == pytest.approx(7.0)
    assert retry_after(date, now=now + 60) == 0.0
