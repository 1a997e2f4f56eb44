"""Structured logs, one line per event with the fields from ``extra=``: JSON objects, or ``key=value`` text for a
terminal (the quickstart). Credentials and bodies are never passed in."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
# A request line reads best as: what was asked, what was decided, how long each part took.
_TEXT_ORDER = (
    "method", "path", "route", "status", "outcome", "reason", "model", "window",
    "combine", "upstream_ms", "rerank_ms", "duration_ms", "disconnect", "request_id",
)  # fmt: skip


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_extras(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...``: the same fields as the JSON line, so that the text log of a
    request says its route, decision and timings too, not just ``request``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record)
        line = self.formatMessage(record)
        extras = _extras(record)
        ordered = [k for k in _TEXT_ORDER if k in extras] + [k for k in extras if k not in _TEXT_ORDER]
        fields = " ".join(f"{k}={_text(extras[k])}" for k in ordered if extras[k] is not None)
        if fields:
            line = f"{line} {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


def _text(value: Any) -> str:
    """A value as one token: quoted (JSON-style) when it holds spaces, quotes or ``=``, so lines stay splittable."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == "" or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text)
    return text


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = TextFormatter()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log duplicates our one line per request.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
