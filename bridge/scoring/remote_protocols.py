"""What a remote reranking server is sent and what its answer means: pure functions and classes, no HTTP.

Two wire formats:

- ``tei`` (text-embeddings-inference ``POST /rerank``): ``{"query", "texts", "raw_scores", "truncate"}`` →
  ``[{"index", "score"}, ...]``. TEI applies a sigmoid unless ``raw_scores`` is true, so the bridge simply
  asks for the activation it wants.
- ``cohere`` (Cohere ``/v2/rerank``, Jina ``/v1/rerank``, vLLM ``/rerank`` and ``/v1/rerank``, infinity
  ``/rerank``): ``{"model", "query", "documents", "top_n", "return_documents": false}`` →
  ``{"results": [{"index", "relevance_score"}, ...]}`` in any order (Voyage and infinity before 0.0.50 answer
  the same entries under ``"data"``, which is read too). The server's ``relevance_score`` is a probability
  for most of them (``score_activation: sigmoid``) or a logit (``identity``, or infinity with
  ``raw_scores: true``); :class:`ScoreConversion` turns it into what the model's ``activation`` asks for.

Both raise :class:`BadAnswer` for an answer that does not score every text exactly once with a finite number.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

from bridge.scoring.base import ModelConfigError
from bridge.scoring.settings import ModelSettings

Activation = Literal["identity", "sigmoid"]

# Probabilities are clamped to [EPS, 1 - EPS] before their logit is taken: a float32 sigmoid (what servers
# compute) rounds every logit above ~16.6 to exactly 1.0, so no finer information exists there, and 0 or 1
# must not become an infinite score. The largest logit recovered is log((1 - EPS) / EPS) ≈ 16.6.
LOGIT_EPS = 2.0**-24

# How much of a server's error body a message quotes.
_BODY_CHARS = 300


class BadAnswer(ValueError):
    """A 2xx answer the bridge cannot use (not JSON of the right shape, a text scored twice or not at all)."""


def wanted_activation(name: str, settings: ModelSettings) -> Activation:
    """The activation the bridge's scores must have for this remote model; raises :class:`ModelConfigError`
    for what no remote server gives (one label's probability after a softmax across labels)."""
    if settings.label is not None:
        raise ModelConfigError(
            f"model {name!r}: a remote /rerank server scores 1-label models only (one score per pair); "
            "remove `label`"
        )
    if settings.activation == "softmax":
        raise ModelConfigError(
            f"model {name!r}: a remote /rerank server returns one score per pair, which has no softmax; "
            "use identity or sigmoid"
        )
    return "identity" if settings.activation == "identity" else "sigmoid"


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


@dataclass(frozen=True)
class ScoreConversion:
    """From what the server returns (``served``) to what the model's ``activation`` asks for (``wanted``).

    ``sigmoid → identity`` takes the logit of the probability, clamped to ``[LOGIT_EPS, 1 - LOGIT_EPS]``: it
    loses precision near 0 and 1 (two passages both scored 1.0 by the server become equal logits of ~16.6,
    and a float32 probability keeps about 7 digits, so logits above ~10 are coarse). Ask the server for
    logits (``raw_scores: true`` on infinity, ``score_activation: identity`` on a server that returns them)
    when the bridge fuses raw logits.
    """

    served: Activation
    wanted: Activation

    def __call__(self, score: float) -> float:
        if self.served == self.wanted:
            return score
        if self.wanted == "sigmoid":
            return _sigmoid(score)
        p = min(max(score, LOGIT_EPS), 1.0 - LOGIT_EPS)
        return math.log(p / (1.0 - p))


class RemoteProtocol(Protocol):
    """One wire format: where to send, what to send, how to read the answer."""

    @property
    def name(self) -> str:
        """``tei`` or ``cohere``, for messages."""

    def endpoint(self, url: str) -> str:
        """The URL a request goes to, from the configured one."""

    def payload(self, query: str, texts: Sequence[str]) -> dict[str, Any]:
        """The JSON body scoring ``texts`` against ``query``."""

    def scores(self, data: Any, count: int) -> list[float]:
        """One score per text from the decoded answer, in the texts' order; raises :class:`BadAnswer`."""


def _number(value: Any, what: str) -> float:
    """A finite JSON number (not a bool, not a string)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadAnswer(f"{what} is not a number: {value!r:.40}")
    number = float(value)
    if not math.isfinite(number):
        raise BadAnswer(f"{what} is not finite: {number}")
    return number


def _place(entries: Any, count: int, score_key: str) -> list[float]:
    """Each entry's score put at its ``index``; every index in ``0..count-1`` exactly once."""
    if not isinstance(entries, list):
        raise BadAnswer(f"expected a list of results, got {type(entries).__name__}")
    scores: list[float | None] = [None] * count
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise BadAnswer(f"a result is not an object: {entry!r:.60}")
        index = entry.get("index")
        if isinstance(index, bool) or not isinstance(index, int):
            raise BadAnswer(f"a result has no integer index: {entry!r:.60}")
        if not 0 <= index < count:
            raise BadAnswer(f"index {index} is out of range for {count} texts")
        if scores[index] is not None:
            raise BadAnswer(f"index {index} is scored twice")
        if score_key not in entry:
            raise BadAnswer(f"result {index} has no {score_key!r}")
        scores[index] = _number(entry[score_key], f"{score_key} of result {index}")
    missing = [i for i, score in enumerate(scores) if score is None]
    if missing:
        raise BadAnswer(f"answered {count - len(missing)} of {count} texts (index {missing[0]} missing)")
    return [score for score in scores if score is not None]


@dataclass(frozen=True)
class TEIProtocol:
    """text-embeddings-inference ``POST /rerank``; ``raw_scores`` asks for logits instead of sigmoids."""

    raw_scores: bool
    truncate: bool
    name: str = "tei"

    def endpoint(self, url: str) -> str:
        """``/rerank`` appended to the path when it does not end in it (a query string stays a query)."""
        parts = urlsplit(url)
        path = parts.path.rstrip("/")
        if not path.endswith("/rerank"):
            path += "/rerank"
        return urlunsplit(parts._replace(path=path))

    def payload(self, query: str, texts: Sequence[str]) -> dict[str, Any]:
        return {
            "query": query,
            "texts": list(texts),
            "raw_scores": self.raw_scores,
            "truncate": self.truncate,
        }

    def scores(self, data: Any, count: int) -> list[float]:
        return _place(data, count, "score")


@dataclass(frozen=True)
class CohereProtocol:
    """The Cohere-style ``POST {url}``; every document's score asked for (``top_n`` = all of them)."""

    model: str
    raw_scores: bool
    conversion: ScoreConversion
    name: str = "cohere"

    def endpoint(self, url: str) -> str:
        return url

    def payload(self, query: str, texts: Sequence[str]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "query": query,
            "documents": list(texts),
            "top_n": len(texts),
            "return_documents": False,
        }
        if self.raw_scores:
            body["raw_scores"] = True
        return body

    def scores(self, data: Any, count: int) -> list[float]:
        if not isinstance(data, Mapping):
            raise BadAnswer(f"expected an object with results, got {type(data).__name__}")
        entries = data.get("results", data.get("data"))
        if entries is None:
            raise BadAnswer("the answer has no results")
        return [self.conversion(score) for score in _place(entries, count, "relevance_score")]


def build_protocol(name: str, settings: ModelSettings) -> RemoteProtocol:
    """The protocol object for ``models.<name>``; raises :class:`ModelConfigError` for what it cannot score."""
    remote = settings.remote
    if remote is None:
        raise ValueError(f"model {name!r} has no `remote` section")
    wanted = wanted_activation(name, settings)
    if remote.protocol == "tei":
        return TEIProtocol(raw_scores=wanted == "identity", truncate=remote.truncate)
    if remote.model is None:  # the settings refuse this; kept for objects built with model_copy
        raise ModelConfigError(f"model {name!r}: protocol cohere needs `remote.model`")
    conversion = ScoreConversion(served=remote.served_activation, wanted=wanted)
    return CohereProtocol(model=remote.model, raw_scores=remote.raw_scores, conversion=conversion)


def error_message(status: int, body: str) -> str:
    """``HTTP <status>: <the server's message>``: TEI and infinity say ``{"error": ...}`` (infinity and vLLM
    nest ``{"message"}`` in it), Cohere ``{"message"}``, Jina and FastAPI servers ``{"detail"}`` (a list of
    validation problems for a 422); anything else is quoted, cut to a few hundred characters."""
    message: Any = None
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, Mapping):
        for key in ("error", "message", "detail"):
            if data.get(key):
                message = data[key]
                break
    if isinstance(message, Mapping):
        message = message.get("message") or message.get("msg") or json.dumps(message)
    elif isinstance(message, list):
        message = "; ".join(
            str(item.get("msg", item)) if isinstance(item, Mapping) else str(item) for item in message
        )
    text = str(message) if message is not None else body
    text = " ".join(text.split())
    return f"HTTP {status}: {text[:_BODY_CHARS] or '(empty body)'}"


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
