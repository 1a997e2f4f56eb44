"""Token budgets (``max_query_tokens``, ``max_passage_tokens``): a pair holds exactly what Hugging Face gives for
the query's first N tokens and the passage's first M tokens, truncated ``longest_first`` to ``max_length``; the
texts are still cut before tokenising (a 1 MiB passage costs what a short one does); chunking covers what the
passage budget leaves; the bi-encoder keeps each text's first N tokens."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bridge.scoring.bi_encoder import BiEncoderModel
from bridge.scoring.chunking import window_spans
from bridge.scoring.encoder import PairEncoder, budgeted
from bridge.scoring.model import CrossEncoderModel
from bridge.scoring.settings import ModelSettings
from bridge.scoring.truncation import first_guess
from tests.tiny_models import RecordingTokenizer, build_bi_encoder

MIB = 1 << 20
WORDS = "berlin population people live museums city the of and paris weather , inhabitants . x".split()
REAL_BI_ENCODER = Path(__file__).resolve().parents[2].parent / "shared" / "models" / "all-minilm-l6-v2"
# Real prose with long words that WordPiece splits (so budgets fall inside words).
PROSE = (
    "Dietary polyunsaturated fatty acids and their metabolites influence cardiovascular outcomes; "
    "epidemiological investigations of Mediterranean populations (n=12,345) reported hypercholesterolaemia "
    "less often among participants eating unprocessed legumes, wholegrains and phytoestrogen-rich foods. "
)


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(count))


def hf_budgeted_pair(
    tokenizer: Any,
    query: str,
    passage: str,
    max_length: int,
    query_tokens: int | None,
    passage_tokens: int | None,
    direction: str = "right",
) -> tuple[list[int], list[int]]:
    """The reference, from Hugging Face's own Rust tokenizer: each text encoded whole, cut to its first N tokens
    (``Encoding.truncate``), then paired by the tokenizer's post-processor with ``longest_first`` truncation."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    first = backend.encode(query, add_special_tokens=False)
    second = backend.encode(passage, add_special_tokens=False)
    if query_tokens is not None:
        first.truncate(query_tokens)
    if passage_tokens is not None:
        second.truncate(passage_tokens)
    backend.enable_truncation(max_length, strategy="longest_first", direction=direction)
    out = backend.post_process(first, second, add_special_tokens=True)
    return out.ids, out.type_ids


def cross_encoder(source: Path, **budgets: Any) -> CrossEncoderModel:
    return CrossEncoderModel("m", ModelSettings(source=str(source), dtype="float32", warmup=False, **budgets))


@pytest.fixture(scope="module")
def tiny_model(tiny_ce: Path) -> CrossEncoderModel:
    return cross_encoder(tiny_ce)


# -- settings ------------------------------------------------------------------------------------------------


def test_budgets_are_optional_positive_integers():
    settings = ModelSettings(source="x")
    assert settings.max_passage_tokens is None and settings.max_query_tokens is None
    assert ModelSettings(source="x", max_passage_tokens=64, max_query_tokens=16).max_passage_tokens == 64
    for bad in (0, -5, "many", 2.5):
        with pytest.raises(ValidationError):
            ModelSettings(source="x", max_passage_tokens=bad)
        with pytest.raises(ValidationError):
            ModelSettings(source="x", max_query_tokens=bad)
    bi = ModelSettings(kind="bi-encoder", source="x", max_passage_tokens=32, max_query_tokens=8)
    assert (bi.max_passage_tokens, bi.max_query_tokens) == (32, 8)


def test_remote_models_refuse_budgets_the_bridge_cannot_apply():
    with pytest.raises(ValidationError, match="local models only"):
        ModelSettings(source="x", remote={"url": "http://127.0.0.1:8080"}, max_passage_tokens=64)
    with pytest.raises(ValidationError, match="local models only"):
        ModelSettings(source="x", remote={"url": "http://127.0.0.1:8080"}, max_query_tokens=8)


def test_budgeted_takes_the_smaller_need():
    assert budgeted(126, None) == 126
    assert budgeted(126, 64) == 64
    assert budgeted(126, 500) == 126


# -- cross-encoder pairs ----------------------------------------------------------------------------------------


def test_reference_without_budgets_is_the_plain_tokenizer_call(tiny_model):
    rng = random.Random(1)
    for _ in range(20):
        query, passage = words(rng, rng.randint(0, 200)), words(rng, rng.randint(0, 300))
        expected = tiny_model.tokenizer([query], [passage], truncation="longest_first", max_length=128)
        assert hf_budgeted_pair(tiny_model.tokenizer, query, passage, 128, None, None) == (
            expected["input_ids"][0],
            expected["token_type_ids"][0],
        )


@pytest.mark.parametrize("model_name", ["tiny", "real"])
def test_budgeted_pairs_have_the_tokens_hugging_face_gives_for_the_cut_texts(model_name, tiny_ce, request):
    source = tiny_ce if model_name == "tiny" else request.getfixturevalue("real_model")
    plain = cross_encoder(source)
    room = plain.max_length - 3
    budgets = [None, 1, 7, room // 3, room // 2, room - 1, room, room + 1, 2 * room]
    sizes = [0, 1, 5, room // 4, room // 2, room - 1, room + 1, 2 * room, 6 * room]
    rng = random.Random(11)
    models: dict[tuple[int | None, int | None], CrossEncoderModel] = {}
    checked = cut_query = cut_passage = 0
    for _ in range(60 if model_name == "tiny" else 30):
        query_tokens, passage_tokens = rng.choice(budgets), rng.choice(budgets)
        key = (query_tokens, passage_tokens)
        if key not in models:
            models[key] = cross_encoder(source, max_query_tokens=query_tokens, max_passage_tokens=passage_tokens)
        model = models[key]
        make = (lambda n: words(rng, n)) if model_name == "tiny" else (lambda n: (PROSE * (n // 20 + 1))[: n * 6])
        query, passage = make(rng.choice(sizes)), make(rng.choice(sizes))
        q = len(plain.tokenizer(query, add_special_tokens=False)["input_ids"])
        p = len(plain.tokenizer(passage, add_special_tokens=False)["input_ids"])
        q_cut = q if query_tokens is None else min(q, query_tokens)
        p_cut = p if passage_tokens is None else min(p, passage_tokens)
        if q_cut > room and p_cut > room and (q_cut > p_cut) != (len(query) > len(passage)):
            continue  # the documented exception (both over the whole room: characters decide the odd token)
        cut_query += q_cut < min(q, room + 1)
        cut_passage += p_cut < min(p, room + 1)
        (item,) = model.encode(query, [passage])
        expected = hf_budgeted_pair(plain.tokenizer, query, passage, plain.max_length, query_tokens, passage_tokens)
        assert (item.input_ids, item.token_type_ids) == expected, (query_tokens, passage_tokens, q, p)
        checked += 1
    assert checked >= 20 and cut_query >= 5 and cut_passage >= 5, "budgets that cut were among the cases"


def test_passage_budget_inside_a_word_keeps_its_first_word_pieces(real_model):
    model = cross_encoder(real_model, max_passage_tokens=9, max_query_tokens=4)
    ids = model.tokenizer(PROSE, add_special_tokens=False)["input_ids"]
    pieces = model.tokenizer.convert_ids_to_tokens(ids[:12])
    assert any(piece.startswith("##") for piece in pieces[:9]), "the cut falls among a word's pieces"
    (item,) = model.encode(PROSE, [PROSE])
    assert item.input_ids == hf_budgeted_pair(model.tokenizer, PROSE, PROSE, model.max_length, 4, 9)[0]
    assert item.token_type_ids is not None and item.token_type_ids.count(1) == 9 + 1, "9 passage tokens + [SEP]"


def test_no_budget_pairs_are_unchanged(tiny_ce):
    rng = random.Random(4)
    plain, generous = cross_encoder(tiny_ce), cross_encoder(tiny_ce, max_passage_tokens=10_000)
    for _ in range(20):
        query, passages = words(rng, rng.randint(0, 150)), [words(rng, rng.randint(0, 400)) for _ in range(3)]
        expected = plain.tokenizer([query] * 3, passages, truncation="longest_first", max_length=plain.max_length)
        assert [i.input_ids for i in plain.encode(query, passages)] == expected["input_ids"]
        assert [i.input_ids for i in generous.encode(query, passages)] == expected["input_ids"]


def test_budgets_keep_texts_cut_before_tokenising(tiny_ce):
    rng = random.Random(3)
    huge = words(rng, MIB // 5)[:MIB]
    model = cross_encoder(tiny_ce, max_passage_tokens=20, max_query_tokens=6)
    recorder = RecordingTokenizer(model.tokenizer)
    encoder = PairEncoder(recorder, model.max_length, model.settings, uses_token_types=True)
    recorder.calls.clear()
    items = encoder.encode(huge, [huge, words(rng, 300), ""])
    seen = [length for call in recorder.calls for length in call]
    assert max(seen) <= first_guess(20), "each text is cut to what its budget needs, not the model's room"
    (query_cut,) = recorder.calls[0]
    assert query_cut <= first_guess(6), "the query once, cut to what its own budget needs"
    assert [len(item) for item in items] == [3 + 6 + 20, 3 + 6 + 20, 3 + 6]
    assert items[0].input_ids == hf_budgeted_pair(model.tokenizer, huge[:5000], huge[:5000], 128, 6, 20)[0]


def test_chunking_covers_what_the_passage_budget_leaves(tiny_ce):
    rng = random.Random(8)
    settings = {"long_documents": "chunk", "chunk_stride": 8, "max_chunks": 16}
    model = cross_encoder(tiny_ce, max_passage_tokens=300, max_query_tokens=5, **settings)
    query, passage = words(rng, 40), words(rng, 1000)
    tokenizer, template = model.tokenizer, model._encoder.template
    assert template is not None
    q_ids = tokenizer(query, add_special_tokens=False)["input_ids"][:5]
    p_ids = tokenizer(passage, add_special_tokens=False)["input_ids"][:300]
    size = model.max_length - template.special_tokens - len(q_ids)
    expected = [template.build(q_ids, p_ids[s:e])[0] for s, e in window_spans(len(p_ids), size, 8, 16)]
    items = model.encode(query, [passage])
    assert [item.input_ids for item in items] == expected
    assert len(expected) == 3, "300 tokens in windows of 120 sharing 8: three windows"
    unbudgeted = cross_encoder(tiny_ce, **settings).encode(query, [passage])
    whole = tokenizer(passage, add_special_tokens=False)["input_ids"]
    assert len(whole) == 1000 and len(unbudgeted) == len(window_spans(1000, size + 5 - 40, 8, 16)) == 13, (
        "without budgets: the 40-token query and windows over all 1000 tokens"
    )


def test_fallback_path_applies_budgets_by_token_offsets(tiny_ce, real_model):
    """A tokenizer that truncates on the left takes the whole-pair path; the budgets still keep the first tokens,
    and the pair is what the tokenizer gives for the cut texts (left truncation then applies to them)."""
    from transformers import AutoTokenizer

    for source, text in ((tiny_ce, words(random.Random(2), 400)), (real_model, PROSE * 20)):
        model = cross_encoder(source, max_passage_tokens=150, max_query_tokens=30)
        tokenizer = AutoTokenizer.from_pretrained(source, truncation_side="left")
        max_length = min(model.max_length, 128)
        encoder = PairEncoder(tokenizer, max_length, model.settings, uses_token_types=True)
        assert encoder.template is None, "left truncation: the whole-pair path"
        (item,) = encoder.encode(text, [text])
        assert (item.input_ids, item.token_type_ids) == hf_budgeted_pair(
            tokenizer, text, text, max_length, 30, 150, direction="left"
        )


# -- bi-encoder -------------------------------------------------------------------------------------------------


def bi_reference(tokenizer: Any, text: str, budget: int | None, max_length: int) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = ids if budget is None else ids[:budget]
    return [tokenizer.cls_token_id, *ids[: max_length - 2], tokenizer.sep_token_id]


@pytest.mark.parametrize("which", ["tiny", "real"])
def test_bi_encoder_keeps_each_text_first_tokens(which, tmp_path):
    if which == "tiny":
        source = build_bi_encoder(tmp_path / "bi", max_seq_length=64)
        text = words(random.Random(6), 200)
    else:
        if not (REAL_BI_ENCODER / "modules.json").is_file():
            pytest.skip(f"the shared bi-encoder {REAL_BI_ENCODER} is not present")
        source, text = REAL_BI_ENCODER, PROSE * 40
    budgets = {"max_query_tokens": 5, "max_passage_tokens": 40}
    model = BiEncoderModel("b", ModelSettings(kind="bi-encoder", source=str(source), warmup=False, **budgets))
    plain = BiEncoderModel("p", ModelSettings(kind="bi-encoder", source=str(source), warmup=False))
    limit = model.max_length
    for role, budget in (("query", 5), ("document", 40)):
        (item,) = model.encode(role, [text])
        assert item.input_ids == bi_reference(model.tokenizer, text, budget, limit), role
        (whole,) = plain.encode(role, [text])
        assert whole.input_ids == bi_reference(plain.tokenizer, text, None, limit), "no budget: max_seq_length"
    huge = BiEncoderModel(
        "h", ModelSettings(kind="bi-encoder", source=str(source), warmup=False, max_passage_tokens=10_000)
    )
    assert huge.encode("document", [text])[0].input_ids == bi_reference(huge.tokenizer, text, None, limit)


# -- eval flags -------------------------------------------------------------------------------------------------


def test_eval_flags_set_the_model_budgets(tmp_path, capsys):
    import argparse

    from bridge.config import Settings
    from bridge.evaluation.command import add_eval_parser, resolve_model, run_eval

    parser = argparse.ArgumentParser()
    add_eval_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", str(tmp_path), "--max-passage-tokens", "64", "--max-query-tokens", "16"])
    assert (args.max_passage_tokens, args.max_query_tokens) == (64, 16)
    plain = parser.parse_args(["eval", str(tmp_path)])
    assert plain.max_passage_tokens is None and plain.max_query_tokens is None

    configured = Settings(models={"prod": ModelSettings(source="org/model", max_passage_tokens=200)})
    _, model = resolve_model(configured, None, "float32", None, max_passage_tokens=64, max_query_tokens=16)
    assert (model.max_passage_tokens, model.max_query_tokens) == (64, 16)
    _, kept = resolve_model(configured, None, "float32", None)
    assert (kept.max_passage_tokens, kept.max_query_tokens) == (200, None), "no flag: the model's own setting"

    bad = parser.parse_args(["eval", str(tmp_path / "absent"), "--max-passage-tokens", "0"])
    assert run_eval(Settings(), bad) == 2
    assert "--max-passage-tokens must be at least 1" in capsys.readouterr().err


def test_eval_reference_scores_the_texts_the_budgets_leave(real_model):
    from transformers import AutoTokenizer

    from bridge.evaluation.command import BudgetedReference

    tokenizer = AutoTokenizer.from_pretrained(real_model)

    class Recorder:
        source, max_length = "ref", 512

        def __init__(self) -> None:
            self.tokenizer = tokenizer
            self.seen: list[tuple[str, list[str]]] = []

        def score(self, query: str, passages: Sequence[str]) -> list[float]:
            self.seen.append((query, list(passages)))
            return [0.0] * len(passages)

    inner = Recorder()
    reference = BudgetedReference(inner, 5, 33)
    assert reference.score(PROSE, [PROSE * 3, "short passage"]) == [0.0, 0.0]
    (query, passages), = inner.seen
    ids = tokenizer(PROSE * 3, add_special_tokens=False)["input_ids"]
    assert tokenizer(query, add_special_tokens=False)["input_ids"] == ids[:5]
    assert tokenizer(passages[0], add_special_tokens=False)["input_ids"] == ids[:33]
    assert passages[1] == "short passage"
    assert "max_passage_tokens 33" in reference.description
