"""The evaluation's parts that need no engine: metrics, the exactness check, query bodies, mapping, model choice."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from bridge.config import ConfigError, Settings
from bridge.evaluation.command import add_eval_parser, default_index_name, eval_settings, resolve_model
from bridge.evaluation.indexing import IndexingError, index_body
from bridge.evaluation.metrics import evaluate, win_tie_loss
from bridge.evaluation.runner import Answer, QueryBuilder, RunError, latency_summary, rerank_outcomes
from bridge.evaluation.verify import apply_transform, best_transform, check_query, passage, sample
from bridge.scoring.settings import ModelSettings

QRELS = {"q1": {"a": 3, "b": 1, "z": 0}, "q2": {"c": 1}}


def dcg(gains: list[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def test_metrics_match_their_definitions() -> None:
    run = {"q1": ["b", "x", "a"], "q2": ["y"]}
    result = evaluate(QRELS, run)
    # Exponential gain 2^rel - 1: a=7, b=1.
    assert result.per_query["q1"]["ndcg@10"] == pytest.approx(dcg([1, 0, 7]) / dcg([7, 1]))
    assert result.per_query["q1"]["mrr@10"] == pytest.approx(1.0)
    assert result.per_query["q1"]["recall@100"] == pytest.approx(1.0)
    assert result.per_query["q2"] == {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@100": 0.0}
    assert result.means["ndcg@10"] == pytest.approx(result.per_query["q1"]["ndcg@10"] / 2)
    linear = evaluate(QRELS, run, gain="linear")
    assert linear.per_query["q1"]["ndcg@10"] == pytest.approx(dcg([1, 0, 3]) / dcg([3, 1]))


def test_rank_order_is_judged_not_scores_and_empty_answers_count() -> None:
    # An empty answer (failed search) counts as zero instead of dropping out of the mean.
    result = evaluate(QRELS, {"q1": ["x", "y", "a"], "q2": []})
    assert result.per_query["q1"]["mrr@10"] == pytest.approx(1 / 3)
    assert result.means["mrr@10"] == pytest.approx(1 / 6)
    # Duplicates keep their first position.
    assert evaluate(QRELS, {"q1": ["a", "a", "b"]}).per_query["q1"]["recall@100"] == pytest.approx(1.0)
    assert evaluate(QRELS, {"q1": [], "q2": []}).means == {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@100": 0.0}


def test_cutoffs() -> None:
    ranking = [f"x{i}" for i in range(10)] + ["a"]
    result = evaluate(QRELS, {"q1": ranking}).per_query["q1"]
    assert result["ndcg@10"] == 0.0 and result["mrr@10"] == 0.0
    assert result["recall@100"] == pytest.approx(0.5)


def test_win_tie_loss() -> None:
    base = {"q1": {"ndcg@10": 0.5}, "q2": {"ndcg@10": 0.5}, "q3": {"ndcg@10": 0.2}, "q4": {"ndcg@10": 0.0}}
    other = {"q1": {"ndcg@10": 0.7}, "q2": {"ndcg@10": 0.5}, "q3": {"ndcg@10": 0.1}, "q4": {"ndcg@10": 0.0}}
    assert win_tie_loss(base, other) == {"wins": 1, "ties": 2, "losses": 1}


def test_check_query_accepts_the_reference_order_and_ties() -> None:
    ids = ["d1", "d2", "d3", "d4"]
    scores = [0.1, 0.9, 0.5, 0.5 + 1e-6]
    exact = check_query("q", ids, scores, ["d2", "d4", "d3", "d1"], 1e-4)
    assert exact.exact and exact.agrees and exact.first_difference is None
    # d3 and d4 tie within the tolerance: either order is right.
    tied = check_query("q", ids, scores, ["d2", "d3", "d4", "d1"], 1e-4)
    assert not tied.exact and tied.agrees and tied.first_difference == 1
    # A shorter answer (depth < window) is checked as far as it goes.
    assert check_query("q", ids, scores, ["d2", "d4"], 1e-4).agrees


def test_check_query_rejects_wrong_orders() -> None:
    ids = ["d1", "d2", "d3"]
    scores = [0.1, 0.9, 0.5]
    engine_order = check_query("q", ids, scores, ["d1", "d2", "d3"], 1e-4)
    assert not engine_order.agrees
    assert engine_order.violation is not None and engine_order.violation["better_left_out"] == "d2"
    stranger = check_query("q", ids, scores, ["d2", "dx", "d3"], 1e-4)
    assert not stranger.agrees and stranger.violation is not None
    assert stranger.violation["problem"] == "not among the engine's candidates"
    scored = check_query("q", ids, scores, ["d2", "d3", "d1"], 1e-4, [0.9, 0.5001, 0.1])
    assert scored.max_score_difference == pytest.approx(1e-4)


def test_transform_detection() -> None:
    logits = [-3.0, 0.0, 2.5, 20.0]
    assert best_transform([(v, v) for v in logits]) == "identity"
    assert best_transform([(v, 1 / (1 + math.exp(-v))) for v in logits]) == "sigmoid"
    assert best_transform([]) is None
    # float32 sigmoid saturates where the bridge's would.
    assert apply_transform("sigmoid", 20.0) == apply_transform("sigmoid", 19.0) == 1.0
    assert apply_transform(None, 2.0) == 2.0


def test_passage_joins_non_blank_fields() -> None:
    assert passage({"title": "T", "text": "body"}, ["title", "text"], "\n") == "T\nbody"
    assert passage({"title": "", "text": "body"}, ["title", "text"], "\n") == "body"
    assert passage({"text": ["a", " ", "b"]}, ["title", "text"], " | ") == "a | b"
    assert passage(None, ["text"], "\n") == ""


def test_sample_spreads_over_the_run() -> None:
    ids = [str(i) for i in range(10)]
    assert sample(ids, 3) == ["0", "3", "6"]
    assert sample(ids, 20) == ids
    assert sample(ids, 0) == []


def test_query_builder(tmp_path: Path) -> None:
    body = QueryBuilder(["title", "text"], 100).body('say "hi"')
    assert body == {
        "query": {"multi_match": {"query": 'say "hi"', "fields": ["title", "text"], "type": "best_fields"}},
        "size": 100,
        "_source": False,
    }
    template = tmp_path / "t.json"
    template.write_text('{"query": {"match": {"body": "{{query_text}}"}}, "ext": {"rerank": '
                        '{"query_text": "{{query_text}}"}}, "size": 5}')
    filled = QueryBuilder(["body"], 50, template_file=template).body('a "quoted" \\ text')
    assert filled["query"]["match"]["body"] == 'a "quoted" \\ text'
    assert filled["ext"]["rerank"]["query_text"] == 'a "quoted" \\ text'
    assert filled["size"] == 50
    template.write_text('{"query": {"match_all": {}}}')
    with pytest.raises(RunError, match="placeholder"):
        QueryBuilder(["body"], 50, template_file=template)
    template.write_text('{"query": {{query_text}}}')
    with pytest.raises(RunError, match="not JSON"):
        QueryBuilder(["body"], 50, template_file=template)


def test_latency_and_outcomes() -> None:
    answers = {
        str(i): Answer(latency_ms=float(i), x_rerank="applied; model=m; window=10") for i in range(1, 101)
    }
    answers["x"] = Answer(latency_ms=5000.0, x_rerank="skipped; reason=timeout")
    answers["y"] = Answer(latency_ms=1.0, error="HTTP 500: boom")
    summary = latency_summary(answers)
    assert summary["count"] == 101 and summary["p50"] == pytest.approx(51.0)
    assert rerank_outcomes(answers) == {
        "applied": 100,
        "not_applied": {"skipped; reason=timeout": 1, "error": 1},
        "total": 102,
    }
    assert latency_summary({}) == {"count": 0}


def test_index_body_variants(tmp_path: Path) -> None:
    english = index_body()
    assert english["mappings"]["properties"]["title"] == {"type": "text", "analyzer": "english"}
    assert english["settings"]["index"] == {"number_of_shards": 1, "number_of_replicas": 0}
    plain = index_body("plain", 0.9, 0.4)
    assert plain["settings"]["index"]["similarity"]["default"] == {"type": "BM25", "k1": 0.9, "b": 0.4}
    assert plain["settings"]["analysis"]["analyzer"]["plain"]["filter"] == ["lowercase"]
    mapping = tmp_path / "m.json"
    mapping.write_text(json.dumps({"mappings": {"properties": {"body": {"type": "text"}}}}))
    custom = index_body(mapping_file=mapping, b=0.3)
    assert custom["mappings"] == {"properties": {"body": {"type": "text"}}}
    assert custom["settings"]["index"]["similarity"]["default"] == {"type": "BM25", "b": 0.3}
    mapping.write_text("[1]")
    with pytest.raises(IndexingError, match="create-index body"):
        index_body(mapping_file=mapping)
    with pytest.raises(IndexingError, match="cannot read"):
        index_body(mapping_file=tmp_path / "absent.json")


def test_model_resolution_and_rule(tmp_path: Path) -> None:
    configured = Settings(models={"prod": ModelSettings(source="org/model", dtype="float16")})
    name, model = resolve_model(configured, None, "float32", None)
    assert (name, model.source, model.dtype) == ("prod", "org/model", "float32")
    name, model = resolve_model(configured, str(tmp_path), "auto", "cpu")
    assert (name, model.source, model.dtype, model.device) == ("eval", str(tmp_path.resolve()), "auto", "cpu")
    assert resolve_model(configured, "org/other", "float32", None)[1].source == "org/other"
    with pytest.raises(ConfigError, match="no model"):
        resolve_model(Settings(), None, "float32", None)
    with pytest.raises(ConfigError, match="nor a model directory"):
        resolve_model(configured, "./missing-model", "float32", None)
    bridge = eval_settings(configured, "eval-x", name, model, ["title", "text"], 100, 60000)
    assert list(bridge.models) == ["eval"] and len(bridge.rules) == 1
    rule = bridge.rules[0]
    assert (rule.indices, rule.fields, rule.window, rule.model, rule.timeout_ms) == (
        ["eval-x"], ["title", "text"], 100, "eval", 60000,
    )
    with pytest.raises(ConfigError, match="max_window"):
        eval_settings(configured, "eval-x", name, model, ["text"], 5000, 60000)


def test_parser_defaults_and_index_name(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_eval_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", str(tmp_path)])
    assert (args.window, args.depth, args.dtype, args.analyzer, args.verify_sample) == (
        100, 100, "float32", "english", 10
    )
    assert args.config is None and args.upstream is None
    from bridge.evaluation.collection import Collection

    assert default_index_name(Collection(tmp_path / "My Set_1", {}, {})) == "eval-my-set_1"


class FakeReference:
    """Scores a passage by its length, as a stand-in for the transformers model."""

    source = "fake"
    max_length = 512

    def score(self, query: str, passages: list[str]) -> list[float]:
        return [float(len(p)) for p in passages]


async def test_verify_sample_checks_order_scale_and_that_the_bridge_reranked() -> None:
    from bridge.evaluation.verify import verify_sample

    hits: list[dict[str, object]] = [
        {"_id": d, "_source": {"title": "", "text": "x" * n}} for d, n in (("a", 1), ("b", 3), ("c", 2))
    ]

    async def fetch_window(text: str) -> list[dict[str, object]]:
        return hits

    sig: list[float | None] = [apply_transform("sigmoid", v) for v in (3.0, 2.0, 1.0)]
    answers = {
        "q1": Answer(ids=["b", "c", "a"], scores=sig, x_rerank="applied; model=m; window=3"),
        "q2": Answer(ids=["a", "b", "c"], scores=[sig[2], sig[0], sig[1]], x_rerank="applied; model=m; window=3"),
        "q3": Answer(ids=["b", "c", "a"], scores=[9.0, 8.0, 7.0], x_rerank="skipped; reason=timeout"),
    }
    queries = {"q1": "one", "q2": "two", "q3": "three"}
    report = await verify_sample(
        ["q1", "q2", "q3"], queries, answers, fetch_window, FakeReference(),  # type: ignore[arg-type]
        ["title", "text"], "\n", 1e-4,
    )
    result = report.as_dict()
    assert result["bridge_score_vs_reference"]["transform"] == "sigmoid"
    assert (result["queries"], result["agree"], result["exact"], result["all_agree"]) == (3, 1, 1, False)
    problems = {d["query_id"]: d["violation"] for d in result["disagreements"]}
    assert problems["q2"]["better_left_out"] == "b"
    assert problems["q3"] == {"problem": "not reranked (X-Rerank: skipped; reason=timeout)"}


def test_eval_refuses_an_unreachable_hub_model_in_one_line_before_indexing(tmp_path: Path) -> None:
    """Nothing is indexed and no engine is asked: the Hub (a closed port on 127.0.0.1) cannot serve the model."""
    import os
    import socket
    import subprocess
    import sys
    import time

    from tests.evaluation.test_eval_collection import write

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "HF_"))}
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable, "-m", "bridge", "eval", str(write(tmp_path / "mini")), "--no-progress",
            "--model", "cross-encoder/ms-marco-MiniLM-L-6-v2", "--upstream", f"http://127.0.0.1:{closed}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "HF_ENDPOINT": f"http://127.0.0.1:{closed}", "HF_HOME": str(tmp_path / "hf")},
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "cannot reach the Hugging Face Hub" in lines[0] and "--local-dir" in lines[0]
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("http://bob:s3cr3t@127.0.0.1:99999", "invalid port"),
        ("ftp://bob:s3cr3t@127.0.0.1:9200", "scheme"),
        ("bob:s3cr3t@127.0.0.1:9200", "scheme"),  # no scheme: "bob" is taken for one
        ("http://", "valid URL"),
        ("http://bob:s3cr3t@127.0.0.1:9200", "credentials"),
        ("http://127.0.0.1:9200/?pretty", "query"),
    ],
)
def test_eval_bridge_flag_is_validated_and_never_shows_its_password(
    given: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked like ``--upstream`` before anything else runs (the collection folder does not even exist): one
    line naming the flag, and the URL's password nowhere."""
    from bridge.evaluation.command import run_eval

    parser = argparse.ArgumentParser()
    add_eval_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", str(tmp_path / "absent"), "--bridge", given, "--no-progress"])
    assert run_eval(Settings(), args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("rerank-bridge eval: --bridge: ") and problem in lines[0], lines[0]
    assert "s3cr3t" not in captured.err + captured.out


def test_eval_bridge_flag_keeps_a_valid_url_without_its_trailing_slash() -> None:
    from bridge.evaluation.command import checked_bridge_url

    assert checked_bridge_url("https://bridge.example:9300/") == "https://bridge.example:9300"
    assert checked_bridge_url("http://127.0.0.1:9300/search-proxy/") == "http://127.0.0.1:9300/search-proxy"


@pytest.mark.parametrize(
    ("base", "kind"),
    [
        ("http://bob:s3cr3t@127.0.0.1:99999", "InvalidUrlClientError"),
        ("bob:s3cr3t@127.0.0.1:9200", "NonHttpUrlClientError"),
        ("ftp://bob:s3cr3t@127.0.0.1:9200", "NonHttpUrlClientError"),
    ],
)
async def test_a_failed_bridge_request_in_eval_never_shows_url_credentials(base: str, kind: str) -> None:
    """aiohttp's URL errors are the whole URL, userinfo included: the answer names the error and a masked URL."""
    import aiohttp

    from bridge.evaluation.runner import Searcher

    async with aiohttp.ClientSession() as session:
        answer, document = await Searcher(session, base, "idx", {}).search({"query": {"match_all": {}}})
    assert document is None and answer.error is not None
    assert answer.error.startswith(f"{kind}: ") and "127.0.0.1:" in answer.error, answer.error
    assert "s3cr3t" not in answer.error and "bob" not in answer.error
