"""The text log (``log_format: text``, the quickstart's) carries the same fields as the JSON line."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from bridge.ops.logs import configure_logging


@pytest.fixture
def text_log() -> Iterator[io.StringIO]:
    """The root handler ``configure_logging(..., "text")`` installs, writing into a buffer; restored afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    configure_logging("info", "text")
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    try:
        yield buffer
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_text_request_line_shows_route_decision_and_timings(text_log: io.StringIO) -> None:
    logging.getLogger("bridge.access").info(
        "request",
        extra={
            "request_id": "abc123",
            "method": "POST",
            "path": "/products/_search",
            "status": 200,
            "duration_ms": 512.4,
            "outcome": "skipped",
            "reason": "timeout",
            "model": "default",
            "window": None,
            "upstream_ms": 4.1,
            "rerank_ms": 2000.3,
        },
    )
    line = text_log.getvalue().strip()
    assert " INFO bridge.access: request " in line
    fields = line.split(": request ", 1)[1]
    assert fields == (
        "method=POST path=/products/_search status=200 outcome=skipped reason=timeout model=default "
        "upstream_ms=4.1 rerank_ms=2000.3 duration_ms=512.4 request_id=abc123"
    )


def test_text_values_with_spaces_stay_one_field(text_log: io.StringIO) -> None:
    logging.getLogger("bridge").warning("upstream slow", extra={"detail": 'took "long" = 3 s', "empty": ""})
    line = text_log.getvalue().strip()
    assert line.endswith('upstream slow detail="took \\"long\\" = 3 s" empty=""')
