"""``eval --combine``: mode parsing, one run over several modes, the report (table, JSON, plot), ``--kind``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bridge.config import Settings
from bridge.evaluation.collection import Collection
from bridge.evaluation.command import (
    _exit_code,
    add_eval_parser,
    build_report,
    detect_kind,
    resolve_model,
)
from bridge.evaluation.modes import Mode, parse_mode, parse_modes
from bridge.evaluation.report import plot_ndcg_change, table, write_json
from bridge.evaluation.runner import Answer, ModeRun, QueryBuilder, run_modes, server_timing
from bridge.evaluation.verify import VerifyReport
from bridge.scoring.settings import ModelSettings


def test_modes_get_their_defaults_and_canonical_labels() -> None:
    modes = parse_modes("replace, linear:0.5, rrf, linear:0.30:z_score, rrf:10, linear::none, rule")
    assert [m.label for m in modes] == [
        "replace", "linear:0.5:min_max", "rrf:60", "linear:0.3:z_score", "rrf:10", "linear:0.5:none", "rule",
    ]
    assert modes[0].keys == {"combine": "replace"}
    assert modes[1].keys == {"combine": "linear", "alpha": 0.5, "normalization": "min_max"}
    assert modes[2].keys == {"combine": "rrf", "rank_constant": 60}
    assert modes[3].keys == {"combine": "linear", "alpha": 0.3, "normalization": "z_score"}
    assert modes[6].keys == {} and modes[6].combine == "rule"
    assert parse_mode("LINEAR:1").label == "linear:1:min_max"
    assert parse_mode("linear:0").keys["alpha"] == 0.0


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("", "at least one mode"),
        ("replace,,rrf", "empty mode"),
        ("fancy", "unknown mode 'fancy'"),
        ("linear:1.5", "between 0 and 1"),
        ("linear:-0.1", "between 0 and 1"),
        ("linear:nan", "between 0 and 1"),
        ("linear:half", "not a number"),
        ("linear:0.5:softmax", "normalization 'softmax'"),
        ("linear:0.5:min_max:x", "at most"),
        ("rrf:0", "at least 1"),
        ("rrf:2.5", "whole number"),
        ("rrf:60:x", "one option"),
        ("replace:1", "takes no options"),
        ("linear,linear:0.5:min_max", "given twice"),
    ],
)
def test_bad_mode_specs_are_refused_with_the_reason(spec: str, problem: str) -> None:
    with pytest.raises(ValueError, match="--combine") as raised:
        parse_modes(spec)
    assert problem in str(raised.value)


def test_a_mode_adds_its_keys_to_the_body_and_keeps_a_templates_own() -> None:
    base = {"query": {"match": {"text": "x"}}, "ext": {"rerank": {"query_text": "x y"}, "other": 1}}
    body = parse_mode("rrf:5").body(base)
    assert body["ext"] == {"rerank": {"query_text": "x y", "combine": "rrf", "rank_constant": 5}, "other": 1}
    assert base["ext"]["rerank"] == {"query_text": "x y"}  # the base body is not changed
    assert parse_mode("replace").body({"size": 3}) == {"size": 3, "ext": {"rerank": {"combine": "replace"}}}
    assert parse_mode("rule").body({"size": 3}) == {"size": 3}
    with pytest.raises(ValueError, match=r"ext\.rerank"):
        parse_mode("replace").body({"ext": {"rerank": False}})


def test_server_timing_durations() -> None:
    header = "upstream;dur=3.5, rerank;dur=41.0"
    assert server_timing(header, "rerank") == 41.0
    assert server_timing(header, "upstream") == 3.5
    assert server_timing('rerank;desc="x";dur="2"', "rerank") == 2.0
    assert server_timing(header, "absent") is None
    assert server_timing(None, "rerank") is None
    assert server_timing("rerank;dur=fast", "rerank") is None


class Recorder:
    """A stand-in Searcher: answers every search at once and records what was sent, in order."""

    def __init__(self, name: str, log: list[tuple[str, dict[str, Any]]]) -> None:
        self.name = name
        self.url = f"http://{name}/idx/_search"
        self.log = log

    async def search(self, body: Mapping[str, Any]) -> tuple[Answer, dict[str, Any] | None]:
        self.log.append((self.name, dict(body)))
        keys = body.get("ext", {}).get("rerank", {})
        label = keys.get("combine", "engine")
        return Answer(ids=[label], latency_ms=1.0, x_rerank=None if label == "engine" else "applied"), None


async def test_run_modes_sends_one_querys_modes_back_to_back() -> None:
    log: list[tuple[str, dict[str, Any]]] = []
    modes = parse_modes("replace,linear:0.7,rrf")
    run = await run_modes(
        {"q1": "first", "q2": "second"}, QueryBuilder(["text"], 10), Recorder("engine", log),  # type: ignore[arg-type]
        Recorder("bridge", log), modes, concurrency=1,  # type: ignore[arg-type]
    )
    assert [name for name, _ in log] == ["engine", "bridge", "bridge", "bridge"] * 2
    assert "ext" not in log[0][1]  # the engine path gets the plain body
    assert [body["ext"]["rerank"]["combine"] for _, body in log[1:4]] == ["replace", "linear", "rrf"]
    assert log[2][1]["ext"]["rerank"]["alpha"] == 0.7
    texts = [body["query"]["multi_match"]["query"] for _, body in log]
    assert texts == ["first"] * 4 + ["second"] * 4
    assert list(run.modes) == ["replace", "linear:0.7:min_max", "rrf:60"]
    assert run.modes["rrf:60"]["q2"].ids == ["rrf"] and run.engine["q1"].ids == ["engine"]


def parsed(tmp_path: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_eval_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["eval", str(tmp_path), *extra])


def sample_report(tmp_path: Path, combine: str = "replace,linear:0.5,rrf") -> dict[str, Any]:
    """A report built by eval's own ``build_report`` from scripted answers to three judged queries."""
    qrels = {"q1": {"a": 1}, "q2": {"b": 2}, "q3": {"c": 1}}
    collection = Collection(tmp_path / "mini", {"q1": "one", "q2": "two", "q3": "three"}, qrels)
    modes = parse_modes(combine)
    engine = {
        "q1": Answer(ids=["x", "a"], latency_ms=2.0),
        "q2": Answer(ids=["b", "x"], latency_ms=3.0),
        "q3": Answer(ids=["x", "y"], latency_ms=4.0),
    }
    orders = {  # replace: q1 better, q2 worse; linear: q1 better; rrf: everything as BM25
        "replace": {"q1": ["a", "x"], "q2": ["x", "y", "z", "b"], "q3": ["x", "y"]},
        "linear:0.5:min_max": {"q1": ["a", "x"], "q2": ["b", "x"], "q3": ["x", "y"]},
        "rrf:60": {"q1": ["x", "a"], "q2": ["b", "x"], "q3": ["x", "y"]},
    }
    answers = {
        mode.label: {
            q: Answer(
                ids=orders[mode.label][q], latency_ms=100.0 if position == 0 else 10.0,
                rerank_ms=90.0 if position == 0 else 0.5, x_rerank=f"applied; model=m; window=2; combine={mode.combine}",
            )
            for q in qrels
        }
        for position, mode in enumerate(modes)
    }
    run = ModeRun(engine=engine, modes=answers, wall_s=1.0)
    args = parsed(tmp_path, "--combine", combine)
    model = ModelSettings(source=str(tmp_path / "model"), dtype="bfloat16")
    verify = VerifyReport("m", 0.1, 512, score_transform="sigmoid")
    return build_report(
        collection, ["q1", "q2", "q3"], args, "kept", 5, {"settings": {}}, QueryBuilder(["text"], 100), "eval",
        model, run, verify, ["text"], modes,
    )


def test_report_holds_every_mode_against_bm25(tmp_path: Path) -> None:
    report = sample_report(tmp_path)
    assert report["run"]["combine"] == ["replace", "linear:0.5:min_max", "rrf:60"]
    modes = report["modes"]
    assert list(modes) == report["run"]["combine"]
    assert modes["replace"]["per_query_ndcg@10"] == {"wins": 1, "ties": 1, "losses": 1}
    assert modes["linear:0.5:min_max"]["per_query_ndcg@10"] == {"wins": 1, "ties": 2, "losses": 0}
    assert modes["rrf:60"]["per_query_ndcg@10"] == {"wins": 0, "ties": 3, "losses": 0}
    assert modes["rrf:60"]["change"]["ndcg@10"] == 0.0
    assert modes["linear:0.5:min_max"]["change"]["ndcg@10"] > 0 > modes["replace"]["change"]["ndcg@10"]
    assert modes["linear:0.5:min_max"]["ext_rerank"] == {"combine": "linear", "alpha": 0.5, "normalization": "min_max"}
    # The first mode ran the model; the later ones were served by the bridge's score cache.
    assert [m["scores_from"] for m in modes.values()] == ["model", "score cache", "score cache"]
    assert modes["replace"]["rerank_ms"]["p50"] == 90.0 and modes["rrf:60"]["latency_ms"]["p50"] == 10.0
    assert modes["rrf:60"]["x_rerank"] == {"applied": 3, "not_applied": {}, "total": 3}
    # One-mode readers (bench/relevance.sh) still find the first mode as "reranked".
    assert report["metrics"]["reranked"] == modes["replace"]["metrics"]
    assert report["per_query_ndcg@10"] == modes["replace"]["per_query_ndcg@10"]
    assert report["latency_ms"]["reranked"] == modes["replace"]["latency_ms"]
    q2 = report["per_query"]["q2"]
    assert q2["modes"]["replace"]["ndcg@10"] < q2["bm25"]["ndcg@10"] == q2["modes"]["rrf:60"]["ndcg@10"]
    assert q2["latency_ms"] == {"bm25": 3.0, "replace": 100.0, "linear:0.5:min_max": 10.0, "rrf:60": 10.0}
    assert q2["x_rerank"]["rrf:60"].endswith("combine=rrf")
    assert report["model"]["kind"] == "cross-encoder"
    assert _exit_code(report) == 0


def test_table_json_and_plot(tmp_path: Path) -> None:
    report = sample_report(tmp_path)
    text = table(report)
    lines = text.splitlines()
    header = next(line for line in lines if "W/T/L" in line)
    assert all(name in header for name in ("NDCG@10", "MRR@10", "Recall@100", "p50 ms", "p95 ms", "model p50"))
    metrics_rows = lines[: lines.index("", 3)]  # the first block; the change block follows it
    rows = {line.split()[0]: line for line in metrics_rows if line.split() and line.split()[0] in report["modes"]}
    assert "1/1/1" in rows["replace"] and "model" in rows["replace"]
    assert "0/3/0" in rows["rrf:60"] and rows["rrf:60"].rstrip().endswith("score cache")
    assert any(line.startswith("BM25") for line in lines)
    assert "bridge: reranked 3/3 with every mode" in text
    assert "exactness (replace): 0/0 sampled windows" in text
    write_json(report, tmp_path / "out" / "report.json")
    assert json.loads((tmp_path / "out" / "report.json").read_text())["modes"].keys() == report["modes"].keys()
    plot_ndcg_change(report, tmp_path / "out" / "plot.png")
    png = (tmp_path / "out" / "plot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    one = sample_report(tmp_path, "rrf")
    plot_ndcg_change(one, tmp_path / "out" / "one.png")
    # One panel per mode: three panels make a taller figure than one.
    from PIL import Image

    with Image.open(tmp_path / "out" / "plot.png") as three, Image.open(tmp_path / "out" / "one.png") as single:
        assert three.size[0] == single.size[0] and three.size[1] > 2 * single.size[1]


def test_exit_code_names_the_mode_that_was_not_reranked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = sample_report(tmp_path)
    report["modes"]["rrf:60"]["x_rerank"] = {"applied": 2, "not_applied": {"skipped; reason=timeout": 1}, "total": 3}
    assert _exit_code(report) == 1
    assert "reranked 2 of 3 queries with rrf:60" in capsys.readouterr().err
    text = table(report)
    assert "bridge, replace: reranked 3/3" in text
    assert "bridge, rrf:60: reranked 2/3 (X-Rerank: applied); not reranked: skipped; reason=timeout x1" in text
    report = sample_report(tmp_path)
    report["verify"] = {"skipped": "sentence-transformers is not installed"}
    assert _exit_code(report) == 0
    assert "exactness: skipped (sentence-transformers is not installed)" in table(report)


def write_modules(directory: Path, modules: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "modules.json").write_text(json.dumps(modules) if not isinstance(modules, str) else modules)
    return directory


def test_kind_is_detected_from_modules_json(tmp_path: Path) -> None:
    st = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    assert detect_kind(str(write_modules(tmp_path / "bi", st))) == "bi-encoder"
    assert detect_kind(str(write_modules(tmp_path / "no-pooling", st[:1]))) == "cross-encoder"
    assert detect_kind(str(write_modules(tmp_path / "broken", "{not json"))) == "cross-encoder"
    (tmp_path / "plain").mkdir()
    assert detect_kind(str(tmp_path / "plain")) == "cross-encoder"
    assert detect_kind("org/not-in-any-cache-xyz") == "cross-encoder"  # a Hub id: the local cache only
    shared = Path(__file__).resolve().parents[3] / "shared" / "models"
    if (shared / "all-minilm-l6-v2" / "modules.json").is_file():
        assert detect_kind(str(shared / "all-minilm-l6-v2")) == "bi-encoder"
        assert detect_kind(str(shared / "minilm-l6-ce-v1")) == "cross-encoder"


def test_resolve_model_takes_the_kind(tmp_path: Path) -> None:
    bi = write_modules(tmp_path / "bi", [{"type": "sentence_transformers.models.Pooling"}])
    configured = Settings(
        models={"embed": ModelSettings(kind="bi-encoder", source="org/embed"), "ce": ModelSettings(source="org/ce")}
    )
    assert resolve_model(configured, str(bi), "float32", None)[1].kind == "bi-encoder"
    assert resolve_model(configured, str(bi), "float32", None, "cross-encoder")[1].kind == "cross-encoder"
    assert resolve_model(configured, str(tmp_path), "float32", None)[1].kind == "cross-encoder"
    assert resolve_model(configured, str(tmp_path), "float32", None, "bi-encoder")[1].kind == "bi-encoder"
    # A configured model keeps its own kind unless --kind says otherwise.
    assert resolve_model(configured, "embed", "float32", None)[1].kind == "bi-encoder"
    assert resolve_model(configured, "ce", "float32", None, "bi-encoder")[1].kind == "bi-encoder"


def test_parser_takes_combine_and_kind(tmp_path: Path) -> None:
    from bridge.evaluation.command import default_combine

    args = parsed(tmp_path)
    assert (args.combine, args.kind, default_combine(args)) == (None, "auto", "replace")
    # A running bridge's own rules decide unless modes are named.
    assert default_combine(parsed(tmp_path, "--bridge", "http://127.0.0.1:9400")) == "rule"
    assert default_combine(parsed(tmp_path, "--bridge", "http://127.0.0.1:9400", "--combine", "rrf")) == "rrf"
    args = parsed(tmp_path, "--combine", "replace,rrf:10", "--kind", "bi-encoder")
    assert ([m.label for m in parse_modes(args.combine)], args.kind) == (["replace", "rrf:10"], "bi-encoder")
    with pytest.raises(SystemExit):
        parsed(tmp_path, "--kind", "poly-encoder")


def test_a_bad_combine_is_refused_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bridge.evaluation.command import run_eval
    from tests.evaluation.test_eval_collection import write

    args = parsed(write(tmp_path / "mini"), "--combine", "replace,linear:2", "--no-progress", "--model", str(tmp_path))
    args.upstream = "http://127.0.0.1:1"
    assert run_eval(Settings(), args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ALPHA must be between 0 and 1" in err[0]


def test_mode_describe() -> None:
    assert Mode("rule", "rule").describe() == {"label": "rule", "combine": "rule", "ext_rerank": {}}
