"""JSON as the engine reads and writes it, so the bridge never accepts what the engine refuses, nor fails on what
the engine takes.

OpenSearch parses request bodies with Jackson: duplicate keys and ``NaN``/``Infinity`` literals are refused,
lone UTF-16 surrogates (``"\\ud800"``, or their raw three-byte form) are accepted and written back as
``\\uD800``. Python's :mod:`json` disagrees on all of these (it keeps the last duplicate, reads ``Infinity``, fails
to re-encode a lone surrogate) and its C parser and encoder recurse, so a deeply nested body raises
``RecursionError`` anywhere on the request path. :func:`parse_json` refuses nesting past :data:`MAX_DEPTH`, so
every later recursive walk (query text, ``_source`` filtering, ``filter_path``, re-encoding) is safe.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from typing import Any, NoReturn

from bridge.errors import BridgeHTTPError

__all__ = [
    "ENGINE_MAX_DEPTH",
    "MAX_DEPTH",
    "JSONRefused",
    "depth_refusal",
    "dump_json",
    "nesting_exceeds",
    "parse_answer",
    "parse_json",
    "scrub_surrogates",
]

MAX_DEPTH = 400
"""Deepest body the bridge parses: far below Python's recursion limit (two frames a level in the walks after
parsing), far above any real search (Dashboards' run to about 20)."""
ENGINE_MAX_DEPTH = 1000
"""Jackson's default nesting limit (StreamReadConstraints), which OpenSearch 2.19 does not enforce: it read 1010
levels of script params, and died (StackOverflowError, the node exits) of 498 nested bool queries, JSON depth 999,
and of deep ``_search/template`` bodies."""

_LOCATION = (
    "\n at [Source: REDACTED (`StreamReadFeature.INCLUDE_SOURCE_IN_LOCATION` disabled); line: {}, column: {}]"
)
_UTF8_BOM = b"\xef\xbb\xbf"
_SURROGATE = re.compile("[\ud800-\udfff]")
# Tokens of the slow, iterative scan that pins a refusal to its line and column (error path only).
_TOKEN = re.compile(
    r'(?P<string>"[^"\\]*(?:\\.[^"\\]*)*")|(?P<open>[\[{])|(?P<close>[\]}])|(?P<colon>:)|(?P<comma>,)'
    r"|(?P<word>-?[A-Za-z_][A-Za-z_0-9]*)|(?P<number>-?[0-9][0-9.eE+-]*)|(?P<space>\s+)|(?P<other>.)",
    re.DOTALL,
)
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(rb"[^\[\]{}]+")
_OPENERS = frozenset(b"[{")
_NON_NUMERIC = frozenset({"NaN", "Infinity", "-Infinity", "+Infinity", "-NaN"})
# Non-finite floats (from ``1e400``) pass through json.dumps as these strings, then become literals again.
_MARKERS = {kind: f"\x00rerank-bridge-{kind}-{uuid.uuid4().hex}\x00" for kind in ("inf", "-inf", "nan")}
_ANSWER_LITERALS = {"inf": '"Infinity"', "-inf": '"-Infinity"', "nan": '"NaN"'}
_REQUEST_LITERALS = {"inf": "1e400", "-inf": "-1e400", "nan": '"NaN"'}


class JSONRefused(BridgeHTTPError):
    """A body the engine refuses (or that the bridge must not relay), worded as the engine's own error.

    ``relayable`` says whether the client's own bytes may go to the engine so that it words the refusal itself,
    positions included: true for everything but nesting past :data:`MAX_DEPTH`, of which the engine may die
    (see :data:`ENGINE_MAX_DEPTH`), so the bridge answers it. Left uncaught, it is answered as the engine-shaped
    400 itself (it is a :class:`BridgeHTTPError`), never relayed.
    """

    def __init__(
        self,
        kind: str,
        reason: str,
        *,
        error_type: str = "json_parse_exception",
        status: int = 400,
        relayable: bool = True,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(status, error_type, reason)
        self.kind = kind
        """``duplicate_key``, ``non_numeric``, ``encoding``, ``syntax`` or ``depth``."""
        self.relayable = relayable
        self.line = line
        self.column = column

    def to_http_error(self) -> BridgeHTTPError:
        return BridgeHTTPError(self.status, self.error_type, self.reason)


def parse_json(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """The value of one JSON document, read as strictly as Jackson reads a request body.

    Raises :class:`JSONRefused` for duplicate keys, non-numeric literals, invalid UTF-8, syntax errors and
    nesting deeper than ``max_depth`` (checked without recursion once parsed; the C parser itself stops at the
    interpreter's recursion limit, so a far deeper body costs next to nothing).
    """
    text = _decode(raw) if isinstance(raw, bytes | bytearray) else raw
    try:
        value = json.loads(text, object_pairs_hook=_unique_object, parse_constant=_refuse_constant)
    except RecursionError:  # the C parser stopped at the interpreter's limit (about 1000 levels)
        raise _depth_refusal(max_depth) from None
    except (_Found, ValueError) as error:  # JSONDecodeError is a ValueError
        # A relayable refusal sends the client's bytes to the engine, which reads in document order: a deep
        # part anywhere (Python may have found the duplicate key or NaN after it, or before it) makes it
        # the bridge's refusal instead.
        if nesting_exceeds(text, max_depth):
            raise _depth_refusal(max_depth) from None
        raise _relayable_refusal(text, error) from None
    if text.count("[") + text.count("{") > max_depth and _deeper_than(value, max_depth):
        raise _depth_refusal(max_depth)
    return value


def nesting_exceeds(text: str | bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays and objects nest deeper than ``limit`` anywhere in ``text``, valid JSON or not.

    Brackets inside strings do not count; an unterminated string counts its brackets (erring on the side of
    refusing). No recursion and no parse: a regex pass strips strings, then one walk over the brackets.
    """
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    depth = 0
    for byte in _NOT_BRACKETS.sub(b"", _STRINGS.sub(b"", data)):
        if byte in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        elif depth:
            depth -= 1
    return False


def parse_answer(raw: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """The value of an engine's JSON answer: the engine wrote it, so duplicate keys and non-numeric literals are
    not looked for (that check costs several times the parse on a page of hits); the depth bound still holds,
    since the bridge's walks over hits recurse. Raises :class:`JSONRefused` for what cannot be read."""
    try:
        text = _decode(raw)
        value = json.loads(text)
    except RecursionError:
        raise _depth_refusal(max_depth) from None
    except ValueError as error:  # JSONDecodeError included
        raise JSONRefused("syntax", str(error)) from None
    if text.count("[") + text.count("{") > max_depth and _deeper_than(value, max_depth):
        raise _depth_refusal(max_depth)
    return value


def dump_json(value: Any, *, pretty: bool = False, request: bool = False) -> bytes:
    """UTF-8 JSON that never fails on what :func:`parse_json` (or the engine) produced.

    Lone surrogates are written as ``\\uD800`` escapes, as Jackson writes them. Non-finite floats are written as
    the engine writes them in an answer (``"Infinity"``, ``"NaN"``, strings); with ``request`` (a body the
    engine will read) as the out-of-range literal that produced them (``1e400``), which Jackson reads back as the
    same double.
    """
    try:
        text = _dumps(value, pretty)
    except ValueError:  # a non-finite float: rare, so the copy is paid only then
        text = _dumps(_finite(value), pretty)
        literals = _REQUEST_LITERALS if request else _ANSWER_LITERALS
        for kind, marker in _MARKERS.items():
            text = text.replace(json.dumps(marker), literals[kind])
    if pretty:
        text += "\n"
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04X}", text).encode()


def scrub_surrogates(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD: tokenizers (Rust) refuse strings that hold one."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


# --- parsing ------------------------------------------------------------------------------------------------


class _Found(Exception):
    """A duplicate key or non-numeric literal: :func:`_locate` then finds the first in document order."""


def _relayable_refusal(text: str, error: Exception) -> JSONRefused:
    if isinstance(error, _Found):
        return _locate(text)
    if isinstance(error, json.JSONDecodeError):
        line, column = _byte_position(text, error.pos)
        return JSONRefused("syntax", error.msg + _LOCATION.format(line, column), line=line, column=column)
    return JSONRefused("syntax", str(error))  # an integer past Python's digit limit, say


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _Found
    return result


def _refuse_constant(name: str) -> NoReturn:
    raise _Found


def _decode(raw: bytes | bytearray) -> str:
    """Text as Jackson decodes it: BOM skipped, raw surrogate triplets accepted, other invalid UTF-8 refused."""
    data = bytes(raw)
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    encoding = json.detect_encoding(data)
    try:
        return data.decode(encoding, "surrogatepass" if encoding == "utf-8" else "strict")
    except UnicodeDecodeError as error:
        raise _encoding_refusal(data, error) from None


def _encoding_refusal(data: bytes, error: UnicodeDecodeError) -> JSONRefused:
    bad = error.start
    first = data[bad]
    if 0x80 <= first < 0xC0 or first >= 0xF8:
        reason, at = f"Invalid UTF-8 start byte 0x{first:02x}", bad
    else:
        at = min(error.end, len(data) - 1)
        reason = f"Invalid UTF-8 middle byte 0x{data[at]:02x}"
    line = data.count(b"\n", 0, at) + 1
    column = at - (data.rfind(b"\n", 0, at) + 1) + 2
    return JSONRefused("encoding", reason + _LOCATION.format(line, column), line=line, column=column)


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether containers nest past ``limit`` levels in a parsed value; iterative, linear in its containers."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def depth_refusal(limit: int = MAX_DEPTH) -> JSONRefused:
    """The bridge's own refusal of a body nested past ``limit``: never relayed (see :data:`ENGINE_MAX_DEPTH`)."""
    return _depth_refusal(limit)


def _depth_refusal(limit: int) -> JSONRefused:
    return JSONRefused(
        "depth",
        f"Document nesting depth ({limit + 1}) exceeds the maximum allowed ({limit}, from "
        "`StreamReadConstraints.getMaxNestingDepth()`)",
        error_type="parsing_exception",
        relayable=False,
    )


def _byte_position(text: str, pos: int) -> tuple[int, int]:
    """Jackson's 1-based line and *byte* column of the character after ``pos``."""
    line_start = text.rfind("\n", 0, pos) + 1
    width = len(text[line_start:pos].encode("utf-8", "surrogatepass"))
    return text.count("\n", 0, pos) + 1, width + 1


def _locate(text: str) -> JSONRefused:
    """The first duplicate key or non-numeric literal in document order, where Jackson's streaming stops."""
    keys: list[set[str] | None] = []  # one entry per open container: its keys so far, None for an array
    expect_key = False
    for token in _TOKEN.finditer(text):
        kind = token.lastgroup
        if kind == "open":
            keys.append(set() if token.group() == "{" else None)
            expect_key = token.group() == "{"
        elif kind == "close":
            if keys:
                keys.pop()
            expect_key = False
        elif kind == "comma":
            expect_key = bool(keys) and keys[-1] is not None
        elif kind == "string" and expect_key:
            try:
                name = json.loads(token.group())
            except ValueError:
                break
            seen = keys[-1]
            if seen is not None:
                if name in seen:
                    line, column = _byte_position(text, token.end())
                    return JSONRefused(
                        "duplicate_key",
                        f"Duplicate field '{name}'" + _LOCATION.format(line, column),
                        line=line,
                        column=column,
                    )
                seen.add(name)
            expect_key = False
        elif kind == "word" and token.group() in _NON_NUMERIC:
            line, column = _byte_position(text, token.end())
            return JSONRefused(
                "non_numeric",
                f"Non-standard token '{token.group()}': enable `JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS` to "
                "allow" + _LOCATION.format(line, column),
                line=line,
                column=column,
            )
    return JSONRefused("syntax", "Unexpected JSON content")


# --- writing ------------------------------------------------------------------------------------------------


def _dumps(value: Any, pretty: bool) -> str:
    return json.dumps(
        value,
        ensure_ascii=False,
        allow_nan=False,
        indent=2 if pretty else None,
        separators=None if pretty else (",", ":"),
    )


def _finite(value: Any) -> Any:
    """A copy of ``value`` with non-finite floats replaced by markers; iterative, as deep as parse allows."""
    root: list[Any] = [value]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        container, key = stack.pop()
        item = container[key]
        if isinstance(item, float) and not math.isfinite(item):
            container[key] = _MARKERS["nan" if math.isnan(item) else "inf" if item > 0 else "-inf"]
        elif isinstance(item, dict):
            copy = dict(item)
            container[key] = copy
            stack.extend((copy, k) for k in copy)
        elif isinstance(item, list | tuple):
            items = list(item)
            container[key] = items
            stack.extend((items, i) for i in range(len(items)))
    return root[0]
