"""NDJSON of ``_msearch`` and ``_msearch/template``: header and body lines in pairs, kept as bytes when untouched."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.search.json_codec import JSONRefused, dump_json, parse_json


@dataclass
class MultiItem:
    header_line: bytes
    body_line: bytes
    header: dict[str, Any]
    body: dict[str, Any]

    def index(self, path_index: str | None) -> str | None:
        """The item's own index expression, else the one in the path."""
        value = self.header.get("index", path_index)
        if isinstance(value, list):
            return ",".join(str(v) for v in value)
        return None if value is None else str(value)


def parse_multi(raw: bytes) -> list[MultiItem] | None:
    """The items, or None when they do not pair up (the engine then answers its own error).

    Raises :class:`JSONRefused` for a line the engine refuses (duplicate keys, ``NaN``, invalid UTF-8, deep
    nesting...). A header line's refusal is always relayable: the engine reads only a few keys of it and
    answers a deeply nested ``index`` with a 200 whose item is an error.
    """
    if not raw.endswith(b"\n"):
        return None  # the engine insists on a final newline
    lines = raw.split(b"\n")
    lines.pop()
    if len(lines) % 2:
        return None
    items = []
    for head, body in zip(lines[0::2], lines[1::2], strict=True):
        try:
            header = parse_json(head) if head.strip() else {}
        except JSONRefused as refused:
            refused.relayable = True
            raise
        parsed = parse_json(body)
        if not isinstance(header, dict) or not isinstance(parsed, dict):
            return None
        items.append(MultiItem(head, body, header, parsed))
    return items


def encode_line(document: Any) -> bytes:
    """One body the engine reads, as compact JSON that never fails (lone surrogates, ``1e400``)."""
    return dump_json(document, request=True)


def join_lines(pairs: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(head + b"\n" + body + b"\n" for head, body in pairs)
