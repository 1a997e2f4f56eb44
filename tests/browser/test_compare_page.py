"""``/_bridge/compare`` in a real headless Chromium, served by a running bridge in front of the real OpenSearch.

The browser types a query the way a user does; what the page then shows must be what the engine and the bridge
really answer for that search: the left column the engine's own ``_search`` order, the right column the
bridge's ``_search`` answer, the arrows the difference between the two, NDCG@10 what ``rerank-bridge eval``'s
metric gives for those orders. Two documents carry markup in their titles (a ``<script>`` and an
``<img onerror>``): the page must show it as text and run none of it.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from bridge.config import Settings
from bridge.evaluation.metrics import evaluate
from bridge.search.compare import query_body
from tests.browser.bridge_thread import bridge_in_thread
from tests.browser.chromium import screenshot, wait_for, wait_for_attribute
from tests.indices import create_index, delete_indices, scratch_name

pytestmark = [pytest.mark.engine, pytest.mark.slow, pytest.mark.browser]

INDEX = scratch_name("compare-page")
QUERY = "aircraft wing flow pressure"
SCRIPT_TITLE = "<script>window.__pwned=1</script>"
IMG_TITLE = '<img src=x onerror="window.__pwned=2">'
DOCS: dict[str, dict[str, str]] = {
    "d-script": {"title": SCRIPT_TITLE, "text": "aircraft wing flow"},
    "d-img": {"title": IMG_TITLE, "text": "pressure on the aircraft wing"},
    "d1": {"title": "aircraft wing", "text": "flow and pressure over the aircraft wing in the boundary layer"},
    "d2": {"title": "boundary layer", "text": "heat flow in a boundary layer with a shock wave"},
    "d3": {"title": "shock wave", "text": "pressure behind a shock wave on a wing"},
    "d4": {"title": "electron theory", "text": "a model of electron flow"},
    "d5": {"title": "wing pressure", "text": "pressure pressure pressure on the wing of an aircraft"},
    "d6": {"title": "race car", "text": "a race car starts up front with flow over its wing"},
    "d7": {"title": "lonely road", "text": "driving down a lonely road in the aircraft"},
}
# Graded judgments for the query (id "q-wing"), one of them for a document no search returns (it counts in the
# ideal DCG only), one 0 (judged, not relevant), so both the grade marks and exponential gain matter.
QRELS = {"d5": 2, "d1": 2, "d3": 1, "d-img": 0, "d6": 1, "not-indexed": 1}
QID = "q-wing"
NO_FIGURE = "\N{EN DASH}"  # what the page shows where NDCG has no judgments to go on


@pytest.fixture(scope="module")
async def index(opensearch_url: str) -> AsyncIterator[str]:
    english = {"type": "text", "analyzer": "english"}
    async with aiohttp.ClientSession() as http:
        await create_index(http, opensearch_url, INDEX, DOCS, {"properties": {"title": english, "text": english}})
        try:
            yield INDEX
        finally:
            await delete_indices(http, opensearch_url, INDEX)


@pytest.fixture(scope="module")
def bridge(opensearch_url: str, tiny_model: Path, index: str) -> Iterator[str]:
    settings = Settings(
        upstream={"url": opensearch_url},
        models={"tiny": {"source": str(tiny_model), "dtype": "float32", "device": "cpu", "threads": 1}},
        rules=[{"indices": [index], "fields": ["title", "text"], "window": 20, "timeout_ms": 60000}],
        admin={"compare": True},
    )
    with bridge_in_thread(settings) as url:
        yield url


def post_json(url: str, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read()), dict(response.headers)


def column(driver: Any, which: str) -> list[dict[str, Any]]:
    """Each ``li.hit`` of ``#<which>-col`` as the page shows it, in display order (one script call)."""
    return list(
        driver.execute_script(
            """
            return Array.from(document.querySelectorAll(arguments[0] + ' > li.hit')).map(li => ({
              id: li.dataset.id, index: li.dataset.index, grade: li.getAttribute('data-grade'),
              title: li.querySelector('.title').textContent,
              move: li.querySelector('.move').getAttribute('data-move'),
              moveText: li.querySelector('.move').textContent,
              engine: li.querySelector('.engine-score').getAttribute('data-value'),
              model: li.querySelector('.model-score').getAttribute('data-value'),
            }));
            """,
            f"#{which}-col",
        )
    )


def ids(hits: list[dict[str, Any]]) -> list[str]:
    return [str(hit["id"]) for hit in hits]


def type_and_submit(driver: Any, index: str, query: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    field = driver.find_element(By.ID, "index")
    field.clear()
    field.send_keys(index)
    box = driver.find_element(By.ID, "q")
    box.clear()
    box.send_keys(query, Keys.ENTER)  # the keyboard path: Enter in the query box submits


def assert_clean(driver: Any) -> None:
    """No markup from a document ran: neither hostile title set its flag, no <img> or <script> was created."""
    assert driver.execute_script("return typeof window.__pwned") == "undefined"
    assert driver.execute_script("return document.querySelectorAll('#results img, #results script').length") == 0


def test_compare_page_shows_the_engine_and_the_bridge_orders(
    browser: Any, bridge: str, opensearch_url: str, index: str, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    shots = tmp_path / "shots"
    search = query_body(QUERY, 10)  # what the page's query box becomes (bridge/search/compare.py)
    engine_answer, _ = post_json(f"{opensearch_url}/{index}/_search", search)
    bridge_answer, bridge_headers = post_json(f"{bridge}/{index}/_search", search)
    assert bridge_headers["X-Rerank"].startswith("applied; model=tiny"), bridge_headers["X-Rerank"]
    engine_order = [hit["_id"] for hit in engine_answer["hits"]["hits"]]
    bridge_order = [hit["_id"] for hit in bridge_answer["hits"]["hits"]]
    assert {"d-script", "d-img"} <= set(engine_order), engine_order
    # The test means something only when the model really moves documents.
    assert bridge_order != engine_order and sorted(bridge_order) == sorted(engine_order)

    browser.get(f"{bridge}/_bridge/compare")
    wait_for(browser, "#compare-form")
    assert browser.execute_script("return document.getElementById('results').dataset.state") == "idle"
    screenshot(browser, shots, "compare-empty")
    type_and_submit(browser, index, QUERY)
    assert wait_for_attribute(browser, "#results", "data-state", ("done", "error")) == "done", (
        browser.find_element(By.ID, "error").text
    )
    engine_col, rerank_col = column(browser, "engine"), column(browser, "rerank")
    screenshot(browser, shots, "compare-done")

    # (a) the engine's own order, (b) the bridge's JSON answer order.
    assert ids(engine_col) == engine_order
    assert ids(rerank_col) == bridge_order
    assert {hit["index"] for hit in engine_col + rerank_col} == {index}
    engine_scores = {hit["_id"]: hit["_score"] for hit in engine_answer["hits"]["hits"]}
    model_scores = {hit["_id"]: hit["_score"] for hit in bridge_answer["hits"]["hits"]}
    for hit in rerank_col:
        assert float(hit["engine"]) == pytest.approx(engine_scores[hit["id"]], rel=1e-6)
        assert float(hit["model"]) == pytest.approx(model_scores[hit["id"]], rel=1e-5)
    # Arrows: places gained from the engine's order to the bridge's, the same number on a document in both
    # columns, and the glyph saying the direction.
    expected_move = {doc: engine_order.index(doc) - bridge_order.index(doc) for doc in engine_order}
    for hit in engine_col + rerank_col:
        move = int(hit["move"])
        assert move == expected_move[hit["id"]], hit
        glyph = "▲ " if move > 0 else "▼ " if move < 0 else "= "
        assert hit["moveText"] == f"{glyph}{abs(move)}", hit
    assert any(int(hit["move"]) != 0 for hit in rerank_col)

    # Escaping: the hostile titles are text, shown literally, and nothing of them ran.
    assert_clean(browser)
    titles = {hit["id"]: hit["title"] for hit in rerank_col}
    assert titles["d-script"].startswith(SCRIPT_TITLE), titles["d-script"]
    assert titles["d-img"].startswith(IMG_TITLE), titles["d-img"]
    assert SCRIPT_TITLE in browser.find_element(By.ID, "rerank-col").text

    # What applied, said in #meta; nothing skipped, so no #reason.
    meta = browser.find_element(By.ID, "meta").text
    assert "tiny" in meta and "replace" in meta and "20" in meta and bridge_headers["X-Rerank"] in meta, meta
    assert not browser.find_element(By.ID, "reason").is_displayed()

    # The submitted view is in the address bar, and that URL alone reproduces it in a fresh load.
    assert browser.execute_script("return new URLSearchParams(location.search).get('q')") == QUERY
    browser.get(f"{bridge}/_bridge/compare?{urlencode({'index': index, 'q': QUERY})}")
    assert wait_for_attribute(browser, "#results", "data-state", ("done", "error")) == "done"
    assert browser.find_element(By.ID, "q").get_attribute("value") == QUERY
    assert ids(column(browser, "engine")) == engine_order
    assert ids(column(browser, "rerank")) == bridge_order
    assert_clean(browser)


def test_judgments_mark_grades_and_give_ndcg(browser: Any, bridge: str, index: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    qrels = tmp_path / "qrels.tsv"
    qrels.write_text(
        "query-id\tcorpus-id\tscore\n"
        + "".join(f"{QID}\t{doc}\t{grade}\n" for doc, grade in QRELS.items())
        + "other\td2\t1\n",
        encoding="utf-8",
    )
    browser.get(f"{bridge}/_bridge/compare?{urlencode({'index': index, 'q': QUERY, 'qid': QID})}")
    assert wait_for_attribute(browser, "#results", "data-state", ("done", "error")) == "done"
    assert browser.find_element(By.ID, "ndcg-engine").text == NO_FIGURE  # nothing judged yet
    browser.find_element(By.ID, "qrels").send_keys(str(qrels))
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "ndcg-engine").text != NO_FIGURE)
    assert "7 judgments of 2 queries" in browser.find_element(By.ID, "qrels-status").text
    engine_col, rerank_col = column(browser, "engine"), column(browser, "rerank")
    screenshot(browser, tmp_path / "shots", "compare-judged")

    for hit in engine_col + rerank_col:
        want = QRELS.get(hit["id"])
        assert hit["grade"] == (None if want is None else str(want)), hit
    judged = {QID: QRELS}
    for which, shown in (("engine", engine_col), ("rerank", rerank_col)):
        # The project's own metric (ir-measures nDCG@10, gain 2^rel - 1, as `rerank-bridge eval`) on the order shown.
        value = evaluate(judged, {QID: ids(shown)}).per_query[QID]["ndcg@10"]
        assert browser.find_element(By.ID, f"ndcg-{which}").text == f"{value:.4f}", which
    assert ids(engine_col) != ids(rerank_col)

    # Another query id (typed): the marks and figures follow it; an unknown one clears them.
    query_id = browser.find_element(By.ID, "qid")
    query_id.clear()
    query_id.send_keys("other")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#engine-col li.hit[data-grade]"))
    graded = browser.execute_script(
        "return Array.from(document.querySelectorAll('#engine-col li.hit[data-grade]')).map(li => li.dataset.id)"
    )
    assert graded == (["d2"] if "d2" in ids(engine_col) else [])
    value = evaluate({"other": {"d2": 1}}, {"other": ids(engine_col)}).per_query["other"]["ndcg@10"]
    assert browser.find_element(By.ID, "ndcg-engine").text == f"{value:.4f}"
    assert_clean(browser)


def test_a_skipped_search_shows_why(browser: Any, bridge: str, index: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(f"{bridge}/_bridge/compare")
    wait_for(browser, "#compare-form")
    browser.find_element(By.ID, "index").send_keys(index)
    body = {"query": {"match": {"text": "wing"}}, "ext": {"rerank": {"enabled": False}}}
    area = browser.find_element(By.ID, "body")
    area.send_keys(json.dumps(body))
    area.send_keys(Keys.CONTROL, Keys.ENTER)  # Ctrl+Enter in the body runs it
    assert wait_for_attribute(browser, "#results", "data-state", ("done", "error")) == "done"
    reason = browser.find_element(By.ID, "reason")
    assert reason.is_displayed() and "disabled_by_request" in reason.text, reason.text
    engine_col, rerank_col = column(browser, "engine"), column(browser, "rerank")
    assert engine_col and ids(engine_col) == ids(rerank_col)
    assert all(hit["move"] == "0" for hit in rerank_col)
    assert "skipped" in browser.find_element(By.ID, "meta").text
    screenshot(browser, tmp_path / "shots", "compare-skipped")
    assert_clean(browser)


def test_an_engine_error_is_shown_not_a_blank_page(browser: Any, bridge: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    missing = scratch_name("compare-missing")
    browser.get(f"{bridge}/_bridge/compare?{urlencode({'index': missing, 'q': QUERY})}")
    assert wait_for_attribute(browser, "#results", "data-state", ("done", "error")) == "error"
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed() and "404" in error.text and "index_not_found_exception" in error.text, error.text
    screenshot(browser, tmp_path / "shots", "compare-error")
