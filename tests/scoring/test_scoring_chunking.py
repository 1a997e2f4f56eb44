"""``long_documents: chunk``: windows over token ids, pair assembly, and MaxP finding text past the truncation."""

from __future__ import annotations

import itertools
import re

import pytest

from bridge.scoring.chunking import PairTemplate, window_spans
from bridge.scoring.model import CrossEncoderModel
from bridge.scoring.settings import ModelSettings

QUERY = "how many people live in berlin?"
FACT = "berlin has a population of 3 million registered inhabitants."
# The seed's example sentence (0.861 alone with the shared model).
REAL_FACT = (
    "Berlin had a population of 3,520,031 registered inhabitants in an area of 891.82 square kilometers."
)

# Varied, unrelated sentences: the shared model scores text like this low.
FILLER = (
    "Tea is an aromatic beverage prepared by pouring hot water over cured leaves. The Great Wall was built over "
    "many centuries. Volcanoes form where magma rises through cracks in the crust. The game of chess is played "
    "on a board of sixty-four squares. Honey bees communicate the location of flowers with a dance. The violin "
    "has four strings tuned in fifths. Penguins are flightless birds of the southern hemisphere. The printing "
    "press made books cheaper. Glaciers carve deep valleys as they move downhill. The heart pumps blood through "
    "arteries and veins. Bamboo is one of the fastest growing plants. A marathon covers a little over forty-two "
    "kilometres. Coffee beans are the roasted seeds of a tropical shrub. The moon has no atmosphere, so its sky "
    "is always black. Lighthouses guided ships along dangerous coasts. Copper turns green when exposed to air "
    "and water. The orchestra tuned their instruments before the concert. Salmon swim upstream to spawn. The "
    "bicycle was invented in the nineteenth century. Rainbows appear when sunlight is refracted by drops of "
    "water. Owls can turn their heads further than most animals. The desert receives very little rain. Silk is "
    "produced by the larvae of a moth. Earthquakes are measured with seismographs. The painter mixed blue and "
    "yellow to make green. Elephants use their trunks to drink and to lift heavy objects. The recipe calls for "
    "two cups of flour and a pinch of salt. Sailors once navigated by the stars. A leap year has three hundred "
    "and sixty-six days. The ancient library held thousands of scrolls. Frogs absorb water through their skin. "
    "The train departed on time and arrived at the coast in the evening. Diamonds are carbon atoms in a rigid "
    "lattice. The children built a sandcastle near the water. Wool keeps sheep warm in winter. The telescope "
    "revealed craters on the moon. Maple syrup is made by boiling the sap of maple trees. The bridge was painted "
    "red to protect the steel. Octopuses have three hearts and blue blood. The old clock in the tower strikes "
    "every hour. Wheat is ground into flour in a mill. Hummingbirds hover by beating their wings very fast. "
    "The chess champion resigned after a long endgame. Clouds are made of tiny droplets of water or ice. The "
    "farmer planted rows of potatoes in the spring. Whales breathe air through a blowhole. The museum guard "
    "locked the doors at six. Paper was first made from bark and old rags. The kite flew high above the hill. "
    "Ants can carry many times their own weight. The pianist practised scales every morning. Ice floats because "
    "it is less dense than water. The baker shaped the dough into long loaves. Thunder is the sound made by "
    "lightning. The fox hid its food under the leaves. A compass needle points toward magnetic north. The lake "
    "froze solid during the coldest week. Sunflowers turn to follow the sun. The poet wrote a sonnet about the "
    "sea. Cheese is made by curdling milk. The mountain path was steep and covered with loose stones. Bats find "
    "insects in the dark by listening to echoes. The carpenter measured the board twice before cutting it."
)


def test_windows_cover_the_passage_with_overlap():
    assert window_spans(10, 20, 4) == [(0, 10)]
    assert window_spans(0, 20, 4) == [(0, 0)], "an empty passage still gets a (scored) window"
    spans = window_spans(1000, 400, 64)
    assert spans == [(0, 400), (336, 736), (672, 1000)]
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end - start == 64
    assert window_spans(1000, 400, 64, max_windows=2) == [(0, 400), (336, 736)]
    # A stride as large as the window still advances.
    assert window_spans(5, 2, 10) == [(0, 2), (1, 3), (2, 4), (3, 5)]
    with pytest.raises(ValueError):
        window_spans(5, 0, 0)


@pytest.mark.parametrize("which", ["tiny", "real"])
def test_pair_template_rebuilds_the_tokenizers_own_encoding(which, tiny_ce, request):
    from transformers import AutoTokenizer

    path = tiny_ce if which == "tiny" else request.getfixturevalue("real_model")
    tokenizer = AutoTokenizer.from_pretrained(path)
    template = PairTemplate.from_tokenizer(tokenizer)
    assert template.special_tokens == tokenizer.num_special_tokens_to_add(pair=True)
    for query, passage in [(QUERY, FACT), ("a", ""), ("berlin?", "museums. " * 5)]:
        expected = {
            key: rows[0] for key, rows in tokenizer([query], [passage]).items()
        }  # batched, as s-t calls it
        q = tokenizer(query, add_special_tokens=False)["input_ids"]
        p = tokenizer(passage, add_special_tokens=False)["input_ids"]
        ids, types = template.build(q, p)
        assert ids == expected["input_ids"]
        assert types == expected["token_type_ids"]


def test_chunk_equals_truncate_for_passages_that_fit(tiny_ce):
    short = [FACT, "berlin is well known for its museums.", "", "paris"]
    truncate = CrossEncoderModel("t", ModelSettings(source=str(tiny_ce), dtype="float32"))
    chunk = CrossEncoderModel(
        "c", ModelSettings(source=str(tiny_ce), dtype="float32", long_documents="chunk")
    )
    assert chunk.predict(QUERY, short) == pytest.approx(truncate.predict(QUERY, short), abs=1e-6)


def buried(tokenizer, after_tokens: int, fact: str = FACT, tail: int = 10) -> str:
    """Filler (twice, the second time backwards) with ``fact`` at the first sentence end after ``after_tokens``,
    followed by ``tail`` more filler sentences."""
    sentences = re.split(r"(?<=\.) ", FILLER)
    sentences += sentences[::-1]
    for cut in range(len(sentences)):
        head = " ".join(sentences[:cut])
        if len(tokenizer(head, add_special_tokens=False, verbose=False)["input_ids"]) > after_tokens:
            return f"{head} {fact} {' '.join(sentences[cut : cut + tail])}"
    raise AssertionError("FILLER is too short")


def test_sentence_after_token_600_found_by_chunk_not_by_truncate(keyword_ce):
    chunk = CrossEncoderModel(
        "c", ModelSettings(source=str(keyword_ce), long_documents="chunk", max_chunks=64)
    )
    truncate = CrossEncoderModel("t", ModelSettings(source=str(keyword_ce)))
    passage = buried(chunk.tokenizer, 600)
    assert len(chunk.tokenizer(passage)["input_ids"]) > 800 > 600 > chunk.max_length
    (high,) = chunk.predict(QUERY, [passage])
    (low,) = truncate.predict(QUERY, [passage])
    assert high > 0.9 and low < 0.1
    assert chunk.predict(QUERY, [FILLER]) == pytest.approx([low]), (
        "without the sentence no window scores high"
    )
    capped = CrossEncoderModel(
        "c", ModelSettings(source=str(keyword_ce), long_documents="chunk", max_chunks=3)
    )
    assert capped.predict(QUERY, [passage])[0] < 0.1, "max_chunks bounds the work: later windows are skipped"


def test_real_model_finds_the_population_sentence_only_when_chunking(real_model):
    """The shared model was trained on single sentences (WikiQA): one sentence drowns in any window much longer
    than itself (inside a 500-token window it scores like the filler around it), so this runs it with
    sentence-sized windows, where MaxP finds the sentence wherever it sits."""
    query = "How many people live in Berlin?"
    settings = {"source": str(real_model), "dtype": "float32", "max_length": 64}
    chunk = CrossEncoderModel(
        "c", ModelSettings(**settings, long_documents="chunk", chunk_stride=32, max_chunks=400)
    )
    truncate = CrossEncoderModel("t", ModelSettings(**settings))
    passages = [buried(chunk.tokenizer, after, REAL_FACT, tail=2) for after in (600, 680, 760)]
    chunked = chunk.predict(query, passages)
    truncated = truncate.predict(query, passages)
    filler_only = chunk.predict(query, [FILLER])[0]
    assert min(chunked) > 0.55, chunked
    assert max(truncated) < 0.2, truncated
    assert filler_only < 0.4, "the best filler window stays well below the sentence's"
