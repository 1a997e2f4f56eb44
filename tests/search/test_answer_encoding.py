"""A reranked answer is compressed only when the client's ``Accept-Encoding`` allows gzip (q-values count)."""

from __future__ import annotations

import pytest

from bridge.search.call import accepts_gzip
from tests.search.scripted_engine import ScriptedEngine, hits_answer, intercepting, reply

TITLES = [{"title": "red car"}, {"title": "blue boat"}]


@pytest.mark.parametrize(
    ("accept", "compressed"),
    [("gzip", True), ("gzip, deflate", True), ("*", True), ("gzip;q=0, identity", False), ("*;q=0", False),
     ("identity, *;q=0, gzip;q=0.5", True), ("deflate", False), ("", False)],
)  # fmt: skip
async def test_a_reranked_answer_is_gzipped_only_when_the_client_accepts_gzip(accept: str, compressed: bool) -> None:
    assert accepts_gzip(accept) is compressed
    engine = ScriptedEngine(lambda asked: reply(200, hits_answer(TITLES, 10)))
    async with intercepting(engine) as client:
        response = await client.post(
            "/rr-docs/_search",
            json={"query": {"match": {"title": "red car"}}},
            headers={"Accept-Encoding": accept},
            auto_decompress=False,
        )
        assert response.status == 200 and response.headers["X-Rerank"].startswith("applied")
        assert (response.headers.get("Content-Encoding") == "gzip") is compressed
