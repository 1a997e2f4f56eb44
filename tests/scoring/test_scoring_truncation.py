"""Texts are cut to the model's budget before tokenising, with the tokens Hugging Face gives for the pair."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import pytest

from bridge.scoring.chunking import PairTemplate, window_spans
from bridge.scoring.encoder import PIECE_CHARS, PairEncoder, Stopped
from bridge.scoring.model import CrossEncoderModel
from bridge.scoring.settings import ModelSettings
from bridge.scoring.truncation import GROWTH, cut_text, first_guess, longest_first, next_guess, sanitize
from tests.tiny_models import RecordingTokenizer

MIB = 1 << 20
WORDS = "berlin population people live museums city the of and paris weather , inhabitants . x".split()


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(count))


def hf_pair(tokenizer: Any, query: str, passage: str, max_length: int) -> tuple[list[int], list[int]]:
    """What sentence-transformers' CrossEncoder gives the model: batch form, ``truncation=True``."""
    out = tokenizer([query], [passage], truncation="longest_first", max_length=max_length)
    return out["input_ids"][0], out["token_type_ids"][0]


@pytest.fixture(scope="module")
def tiny_model(tiny_ce: Path) -> CrossEncoderModel:
    """128 positions: room 125 beside [CLS] [SEP] [SEP], odd, so longest_first's odd token matters."""
    return CrossEncoderModel("tiny", ModelSettings(source=str(tiny_ce), dtype="float32", warmup=False))


def test_longest_first_keeps_what_hugging_face_keeps(tiny_model):
    tokenizer, room = tiny_model.tokenizer, tiny_model.max_length - 3
    counts = [0, 1, 30, 61, 62, 63, 64, 100, 124, 125, 126, 127, 200]
    pairs = [(a, b) for a in counts for b in counts]
    out = tokenizer(
        ["the " * a for a, _ in pairs],
        ["the " * b for _, b in pairs],
        truncation="longest_first",
        max_length=tiny_model.max_length,
    )
    for (a, b), types in zip(pairs, out["token_type_ids"], strict=True):
        kept = (types.count(0) - 2, types.count(1) - 1)  # [CLS] q [SEP] are type 0, p [SEP] type 1
        assert longest_first(a, b, room) == kept, (a, b)
        # Counts capped at room + 1, as the encoder has them: the hint settles which side is longer.
        capped = longest_first(min(a, room + 1), min(b, room + 1), room, a > b if min(a, b) > room else None)
        assert capped == kept, (a, b)


@pytest.mark.parametrize("model_name", ["tiny", "real"])
def test_truncated_pairs_have_the_tokens_hugging_face_gives(model_name, tiny_model, request):
    model = tiny_model
    if model_name == "real":
        real = request.getfixturevalue("real_model")
        model = CrossEncoderModel("real", ModelSettings(source=str(real), dtype="float32", warmup=False))
    room = model.max_length - 3
    rng = random.Random(7)
    sizes = [0, 1, 5, room // 3, room // 2, room // 2 + 1, room - 1, room, room + 1, 2 * room, 8 * room]
    checked_long_query = 0
    for _ in range(120):
        query, passage = words(rng, rng.choice(sizes)), words(rng, rng.choice(sizes))
        q_tokens = len(model.tokenizer(query, add_special_tokens=False)["input_ids"])
        p_tokens = len(model.tokenizer(passage, add_special_tokens=False)["input_ids"])
        if q_tokens > room and p_tokens > room and (q_tokens > p_tokens) != (len(query) > len(passage)):
            continue  # the documented exception, tested below
        checked_long_query += q_tokens > room
        (item,) = model.encode(query, [passage])
        assert (item.input_ids, item.token_type_ids) == hf_pair(
            model.tokenizer, query, passage, model.max_length
        )
    assert checked_long_query > 10, "queries longer than the whole budget were among the cases"


def test_query_and_passage_both_over_budget_the_one_with_more_characters_keeps_the_odd_token(tiny_model):
    room = tiny_model.max_length - 3
    query = "the " * 400  # 400 tokens, 1600 characters
    passage = "inhabitants " * 300  # 300 tokens, 3600 characters: HF counts the query as longer
    (item,) = tiny_model.encode(query, [passage])
    kept_query = item.token_type_ids.count(0) - 2
    assert kept_query == room // 2, "the passage has more characters, so it keeps the odd token"
    assert len(item) == tiny_model.max_length
    hf_ids, hf_types = hf_pair(tiny_model.tokenizer, query, passage, tiny_model.max_length)
    assert hf_types.count(0) - 2 == room // 2 + 1 and len(hf_ids) == len(item), "one token apart, same length"


def test_huge_texts_are_cut_before_tokenising_and_the_query_is_tokenised_once(tiny_model):
    rng = random.Random(3)
    huge = words(rng, MIB // 5)[:MIB]
    passages = [words(rng, 40), huge, words(rng, 300), ""]
    max_length = tiny_model.max_length
    reference = [hf_pair(tiny_model.tokenizer, huge[:20_000], p[:20_000], max_length) for p in passages]
    recorder = RecordingTokenizer(tiny_model.tokenizer)
    encoder = PairEncoder(recorder, tiny_model.max_length, tiny_model.settings, uses_token_types=True)
    recorder.calls.clear()  # the pair layout was learned from two probes
    items = encoder.encode(huge, passages)
    seen = [length for call in recorder.calls for length in call]
    bound = first_guess(tiny_model.max_length)
    assert max(seen) <= bound, f"no text reaches the tokenizer longer than {bound} characters"
    assert len(recorder.calls[0]) == 1 and len(seen) == 1 + len(passages), "the query once, each passage once"
    assert [(item.input_ids, item.token_type_ids) for item in items] == reference


def test_text_without_spaces_is_cut_hard_and_yields_the_tokens_kept(tiny_model):
    rng = random.Random(5)
    dense = ",".join(words(rng, 3).replace(" ", ".") for _ in range(40_000))  # 0.5 MB, no space at all
    (item,) = tiny_model.encode(dense, ["berlin"])
    assert (item.input_ids, item.token_type_ids) == hf_pair(
        tiny_model.tokenizer, dense[:50_000], "berlin", tiny_model.max_length
    )


def test_prefix_short_of_tokens_is_cut_again_longer(tiny_model):
    recorder = RecordingTokenizer(tiny_model.tokenizer)
    encoder = PairEncoder(recorder, tiny_model.max_length, tiny_model.settings, uses_token_types=True)
    recorder.calls.clear()
    sparse = "          " * 2000 + "berlin " * 200  # the first cut holds only spaces
    (ids,) = encoder.prefix_ids([sparse], 126)
    assert ids == tiny_model.tokenizer(sparse, add_special_tokens=False)["input_ids"][:126]
    lengths = [call[0] for call in recorder.calls]
    assert lengths[0] <= first_guess(126) and len(lengths) >= 2, "the first cut held only spaces"
    for before, after in itertools.pairwise(lengths):
        assert before < after <= before * GROWTH + 64, "each cut longer, by at most GROWTH"


def test_next_cut_is_sized_by_the_prefix_own_characters_per_token():
    cut = cut_text("word " * 1000, 400)
    assert next_guess(cut, 40, 100) == len(cut.text) * (100 + 16) * 5 // (4 * 40) + 64
    assert next_guess(cut, 99, 100) == len(cut.text) * 3 // 2 + 64, "at least 1.5 times longer"
    assert next_guess(cut, 0, 100) == len(cut.text) * GROWTH + 64, "no tokens at all: GROWTH times"


def test_cut_text_stops_before_a_space_that_ends_a_word():
    assert cut_text("short", 10).whole
    cut = cut_text("alpha beta  gamma delta", 14)  # the window's last usable space ends "beta"
    assert cut.text == "alpha beta" and cut.at_word_boundary and not cut.whole
    hard = cut_text("x" * 100, 10)
    assert hard.text == "x" * 10 and not hard.at_word_boundary
    assert not hard.enough(10, 10) and hard.enough(26, 10), "a hard cut needs a margin of tokens"


def test_lone_surrogates_become_replacement_characters():
    assert sanitize("plain") == "plain"
    assert sanitize("a \ud800 b") == "a \ufffd b"
    assert sanitize("\ud83d\ude00 ok \udfff") == "\U0001f600 ok \ufffd", "a split pair is joined"
    assert sanitize("über") == "über"


def test_lone_surrogates_in_query_or_passage_are_tokenised(tiny_model):
    items = tiny_model.encode("berlin \ud800 people", ["paris \udfff city", "museums"])
    clean = tiny_model.encode("berlin \ufffd people", ["paris \ufffd city", "museums"])
    assert [item.input_ids for item in items] == [item.input_ids for item in clean]


def test_cancelled_request_stops_tokenising_at_the_next_piece(tiny_model):
    recorder = RecordingTokenizer(tiny_model.tokenizer)
    encoder = PairEncoder(recorder, tiny_model.max_length, tiny_model.settings, uses_token_types=True)
    recorder.calls.clear()
    rng = random.Random(9)
    passages = [words(rng, 150) for _ in range(3 * PIECE_CHARS // 700)]
    asked = []

    def should_stop() -> bool:
        asked.append(len(recorder.calls))
        return len(recorder.calls) >= 2  # the query, then one piece of passages

    with pytest.raises(Stopped):
        encoder.encode("berlin", passages, should_stop)
    assert asked == [0, 1, 2], "asked before each tokenizer call"
    assert len(recorder.calls) == 2 and sum(recorder.calls[1]) <= PIECE_CHARS
    assert tiny_model.encode("berlin", passages, lambda: True) == [], (
        "the model answers a stopped encode with []"
    )


def test_chunk_windows_of_a_huge_passage_equal_those_of_the_whole_text(tiny_ce):
    settings = ModelSettings(
        source=str(tiny_ce),
        dtype="float32",
        warmup=False,
        long_documents="chunk",
        max_chunks=4,
        chunk_stride=16,
    )
    model = CrossEncoderModel("chunks", settings)
    rng = random.Random(11)
    query, passage = words(rng, 20), words(rng, 3000)
    room = model.max_length - 3
    query_ids = model.tokenizer(query, add_special_tokens=False)["input_ids"]
    passage_ids = model.tokenizer(passage, add_special_tokens=False)["input_ids"]
    template = PairTemplate.from_tokenizer(model.tokenizer)
    size = room - len(query_ids)
    spans = window_spans(len(passage_ids), size, 16, 4)
    expected = [template.build(query_ids, passage_ids[start:end])[0] for start, end in spans]
    recorder = RecordingTokenizer(model.tokenizer)
    model._encoder.tokenizer = recorder
    items = model.encode(query, [passage + " " + "berlin " * (MIB // 7)])
    assert [item.input_ids for item in items] == expected
    windows_reach = size + 3 * (size - 16) + 1  # 4 windows of `size` tokens, 16 shared: all that is scored
    assert max(length for call in recorder.calls for length in call) <= first_guess(windows_reach)


def test_left_truncating_tokenizer_takes_hugging_face_pair_path_on_bounded_texts(tiny_ce, tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_ce)
    tokenizer.truncation_side = "left"  # prefixes would hold the wrong tokens
    recorder = RecordingTokenizer(tokenizer)
    encoder = PairEncoder(recorder, tiny_model.max_length, tiny_model.settings, uses_token_types=True)
    assert encoder.template is None
    rng = random.Random(13)
    query, passages = words(rng, 30), [words(rng, 20), words(rng, 400), ""]
    items = encoder.encode(query, passages)
    assert [(item.input_ids, item.token_type_ids) for item in items] == [
        hf_pair(tokenizer, query, passage, tiny_model.max_length) for passage in passages
    ]
    recorder.calls.clear()
    huge = words(rng, MIB // 5)[:MIB]
    (item,) = encoder.encode(huge, [huge])
    assert len(item) == tiny_model.max_length
    assert max(length for call in recorder.calls for length in call) <= 32 * tiny_model.max_length
