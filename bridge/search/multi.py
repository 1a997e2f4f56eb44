"""NDJSON of ``_msearch`` and ``_msearch/template``: header and body lines in pairs, kept as bytes when untouched."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.search.json_codec import JSONRefused, depth_refusal, dump_json, nesting_exceeds, parse_json


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
    nesting...). A header line's refusal is relayable (the engine reads only a few keys of it and answers a
    deeply nested ``index`` with a 200 whose item is an error) unless a body line is too deep to send.
    """
    if not raw.endswith(b"\n"):
        return None  # the engine insists on a final newline
    lines = raw.split(b"\n")
    lines.pop()
    if len(lines) % 2:
        return None
    items = []
    try:
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
    except JSONRefused as refused:
        # Parsing stopped at this line; the engine would go on to the lines after it. A relayable refusal
        # sends them all, so none of their bodies may be nested deeper than the bridge lets through.
        if refused.relayable and any(nesting_exceeds(body) for body in lines[1::2]):
            raise depth_refusal() from None
        raise
    return items


def bodies_too_deep(raw: bytes) -> bool:
    """Whether any body line of an NDJSON multi-search nests past the bridge's bound (header lines may: the
    engine reads a few keys of them and answers even a deep one itself)."""
    return any(nesting_exceeds(body) for body in raw.split(b"\n")[1::2])


def encode_line(document: Any) -> bytes:
    """One body the engine reads, as compact JSON that never fails (lone surrogates, ``1e400``)."""
    return dump_json(document, request=True)


def join_lines(pairs: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(head + b"\n" + body + b"\n" for head, body in pairs)
