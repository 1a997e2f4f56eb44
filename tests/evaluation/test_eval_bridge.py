"""The exactness reference against the bridge's own scorer, and ``eval --bridge`` against a running bridge."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.evaluation.verify import ReferenceScorer, apply_transform, best_transform
from bridge.scoring.local import LocalScorer
from bridge.scoring.settings import ModelSettings
from tests.evaluation.eval_command import run_eval
from tests.indices import scratch_name

REPO = Path(__file__).resolve().parents[2]
QUERY = "how many people live in the city"
PASSAGES = [
    "berlin population million people",
    "museums in the city",
    "aircraft wing flow pressure and heat in the boundary layer",
    "",
    "search engine query passage " * 40,  # longer than the tiny model's 128 tokens: truncated alike
]


@pytest.mark.parametrize(("labels", "label"), [(1, None), (3, "Entailment")])
async def test_reference_scorer_matches_the_bridge_scorer(
    tmp_path: Path, labels: int, label: str | None
) -> None:
    from tests.tiny_models import build_tiny_cross_encoder

    model = build_tiny_cross_encoder(tmp_path, num_labels=labels, seed=3)
    bridge = LocalScorer("tiny", ModelSettings(source=str(model), dtype="float32", device="cpu", label=label))
    await bridge.start()
    try:
        served = await bridge.score(QUERY, PASSAGES)
    finally:
        await bridge.close()
    reference = ReferenceScorer(str(model), label=label).score(QUERY, PASSAGES)
    transform = best_transform(list(zip(reference, served, strict=True)))
    # One logit: the bridge applies sentence-transformers' default sigmoid; three labels: a softmax probability.
    assert transform == ("sigmoid" if labels == 1 else "identity")
    assert [apply_transform(transform, r) for r in reference] == pytest.approx(served, abs=1e-5)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tiny_collection(folder: Path) -> Path:
    folder.mkdir(parents=True)
    words = "wing flow pressure heat boundary layer shock wave electron physics theory model city people".split()
    docs = [
        {"_id": f"d{i}", "title": f"{words[i % 14]} {words[(i * 3) % 14]}", "text": " ".join(words[i % 7 : i % 7 + 6])}
        for i in range(40)
    ]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    queries = [{"_id": f"q{i}", "text": f"{words[i]} {words[i + 1]}"} for i in range(6)]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    rows = [f"q{i}\td{(i * 7) % 40}\t{1 + i % 2}" for i in range(6)]
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return folder


@pytest.fixture
def served_bridge(opensearch_url: str, tiny_model: Path, tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """``rerank-bridge serve`` as deployed, with a rule for one scratch index; yields (url, config, index)."""
    index = scratch_name("eval-bridge")
    config = tmp_path / "bridge.yaml"
    config.write_text(
        json.dumps(
            {
                "upstream": {"url": opensearch_url},
                "models": {"tiny": {"source": str(tiny_model), "dtype": "float32", "device": "cpu"}},
                "rules": [{"indices": [index], "fields": ["title", "text"], "window": 10, "timeout_ms": 30000}],
                "log_level": "warning",
            }
        )
    )
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge", "serve", "--config", str(config), "--port", str(port)], cwd=REPO
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/_bridge/ready", timeout=2).read()
                break
            except OSError:
                assert process.poll() is None, "the bridge exited"
                assert time.monotonic() < deadline, "the bridge did not become ready"
                time.sleep(0.3)
        yield url, config, index
    finally:
        process.terminate()
        process.wait(timeout=60)
        # Exact names only: every index the eval runs below load (the ruled one and f"{index}-unruled").
        for name in (index, f"{index}-unruled"):
            urllib.request.urlopen(
                urllib.request.Request(f"{opensearch_url}/{name}?ignore_unavailable=true", method="DELETE")
            ).read()


@pytest.mark.engine
@pytest.mark.slow
def test_eval_against_a_running_bridge(served_bridge: tuple[str, Path, str], opensearch_url: str, tmp_path: Path) -> None:
    """A random-weight model: the reranked order is meaningless, yet it must be exactly the model's."""
    url, config, index = served_bridge
    collection = tiny_collection(tmp_path / "tiny")
    common = [
        sys.executable, "-m", "bridge", "eval", str(collection), "--config", str(config), "--upstream", opensearch_url,
        "--bridge", url, "--model", "tiny", "--window", "10", "--verify-sample", "4", "--no-progress",
    ]
    out = tmp_path / "out"
    done = subprocess.run([*common, "--index", index, "--out", str(out)], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    report = json.loads((out / "report.json").read_text())
    assert report["bridge"]["mode"] == "external"
    assert report["bridge"]["x_rerank"] == {"applied": 6, "not_applied": {}, "total": 6}
    # No --combine with --bridge: the running bridge's rule decides, and no combination keys are sent.
    assert report["run"]["combine"] == ["rule"] and report["modes"]["rule"]["ext_rerank"] == {}
    assert report["verify"]["mode"] == "replace"
    assert report["verify"]["all_agree"] and report["verify"]["queries"] == 4
    assert report["index"]["action"] in ("created", "kept")

    # An index the running bridge has no rule for: answered, but not reranked, and the exit code says so.
    other = tmp_path / "other"
    done = subprocess.run([*common, "--index", f"{index}-unruled", "--out", str(other)], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert done.returncode == 1
    assert "reranked 0 of 6" in done.stderr
    report = json.loads((other / "report.json").read_text())
    # Every search on an intercepted route says why it was not reranked (issue 10, item 20).
    assert report["bridge"]["x_rerank"] == {
        "applied": 0, "not_applied": {"skipped; reason=no_rule": 6}, "total": 6
    }
    assert not report["verify"]["all_agree"]


@pytest.mark.parametrize(
    ("normalize", "st_config", "similarity"),
    [
        (True, None, "auto"),  # cosine, which is the dot product here
        (False, None, "auto"),  # names none and does not normalise: the raw dot product
        (False, {"similarity_fn_name": "cosine"}, "auto"),  # the model's own choice
        (False, None, "cosine"),  # the bridge's configured one
        (True, {"prompts": {"query": "query: ", "document": "passage: "}}, "auto"),  # encode_query/_document
    ],
)
async def test_bi_encoder_reference_matches_the_bridge_scorer(
    tmp_path: Path, normalize: bool, st_config: dict[str, object] | None, similarity: str
) -> None:
    """sentence-transformers' own encode + similarity, in float32, against the bridge's bi-encoder: 1e-5."""
    from bridge.evaluation.verify import BI_ENCODER_TOLERANCES, BiEncoderReference
    from bridge.scoring.registry import build_scorer
    from tests.tiny_models import build_bi_encoder

    model = build_bi_encoder(tmp_path / "bi", normalize=normalize, st_config=st_config, seed=5)
    settings = ModelSettings(
        kind="bi-encoder", source=str(model), dtype="float32", device="cpu", similarity=similarity  # type: ignore[arg-type]
    )
    bridge = build_scorer("tiny-bi", settings)
    await bridge.start()
    try:
        served = await bridge.score(QUERY, PASSAGES, [f"idx/{i}" for i in range(len(PASSAGES))])
    finally:
        await bridge.close()
    reference = BiEncoderReference(str(model), similarity=None if similarity == "auto" else similarity)
    expected = "dot" if not normalize and st_config is None and similarity == "auto" else "cosine"
    assert reference.similarity == expected
    scores = reference.score(QUERY, PASSAGES)
    assert best_transform(list(zip(scores, served, strict=True))) == "identity"
    assert scores == pytest.approx(served, abs=BI_ENCODER_TOLERANCES["float32"])
    if not normalize:  # the two similarities really differ here, so the check above tells them apart
        assert BiEncoderReference(str(model), similarity="cosine" if expected == "dot" else "dot").score(
            QUERY, PASSAGES
        ) != pytest.approx(served, abs=1e-3)


@pytest.mark.engine
@pytest.mark.slow
def test_eval_compares_modes_with_a_detected_bi_encoder(opensearch_url: str, tmp_path: Path) -> None:
    """One run, a tiny bi-encoder found by its modules.json, three modes: every mode reranked through the
    in-process bridge, the later ones from the score cache, and the exactness sample checked against
    sentence-transformers (on replace answers asked for separately, as the run has no replace mode)."""
    from tests.tiny_models import build_bi_encoder

    model = build_bi_encoder(tmp_path / "bi", seed=7)
    collection = tiny_collection(tmp_path / "tiny")
    index = scratch_name("eval-modes")
    out = tmp_path / "out"
    done = run_eval(
        opensearch_url, index, collection, "--model", str(model), "--window", "10", "--verify-sample", "3",
        "--combine", "linear:0.7:z_score,rrf:5,rule", "--out", str(out),
    )  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["kind"] == "bi-encoder"
    modes = report["modes"]
    assert list(modes) == ["linear:0.7:z_score", "rrf:5", "rule"]
    assert [m["scores_from"] for m in modes.values()] == ["model", "score cache", "score cache"]
    for label, combine in (("linear:0.7:z_score", "linear"), ("rrf:5", "rrf"), ("rule", "replace")):
        assert modes[label]["x_rerank"] == {"applied": 6, "not_applied": {}, "total": 6}
        headers = {q["x_rerank"][label] for q in report["per_query"].values()}
        assert headers == {f"applied; model=eval; window=10; combine={combine}"}, headers
        assert sum(modes[label]["per_query_ndcg@10"].values()) == 6
    verify = report["verify"]
    assert verify["mode"] == "replace" and verify["queries"] == 3 and verify["all_agree"], verify
    assert verify["reference"].startswith("sentence-transformers SentenceTransformer.encode float32 + cosine")
    assert verify["bridge_score_vs_reference"]["max_abs_difference"] < 1e-5
    assert "rrf:5" in done.stdout and "exactness (replace): 3/3" in done.stdout
    assert (out / "ndcg_change.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
