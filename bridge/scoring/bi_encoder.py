"""One sentence-transformers embedding model in this process, run with transformers and torch only.

The pipeline comes from the model's own files (:mod:`bridge.scoring.st_modules`): the Hugging Face model, its
pooling, an optional L2 normalisation, ``max_seq_length``, ``do_lower_case`` and query/document prompts. Each
text is tokenised once at a cost bounded by ``max_seq_length`` (only a prefix of a long text is tokenised) and
truncated as the tokenizer truncates; batches are padded to their own longest text. In float32 the vectors equal
``SentenceTransformer.encode_query``/``encode_document`` within 1e-5 (tested).

Everything here is synchronous and runs on the scorer's worker threads (:mod:`bridge.scoring.batcher`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer
from transformers.utils import cached_file

from bridge.scoring.base import ModelConfigError
from bridge.scoring.collate import Padding, collate
from bridge.scoring.device import Placement
from bridge.scoring.encoder import (
    FALLBACK_CHARS_PER_TOKEN,
    Encoded,
    PrefixTokenizer,
    ShouldStop,
    Stopped,
    budgeted,
    pieces,
)
from bridge.scoring.loading import (
    batch_token_budget,
    capped_max_length,
    model_limit,
    open_source,
    plan_workers,
    quantize_int8,
    swap_to_float32,
)
from bridge.scoring.precision import CHECK_PASSAGES, CHECK_QUERY, PrecisionReport, guard_precision
from bridge.scoring.settings import ModelSettings
from bridge.scoring.st_modules import DenseSpec, StPipeline, choose_similarity, read_pipeline
from bridge.scoring.truncation import sanitize

log = logging.getLogger(__name__)

ROLES = ("query", "document")
_SAMPLE = (
    "Berlin had a population of 3,520,031 registered inhabitants in an area of 891.82 square kilometers; "
    "how many people live there?"
)


@dataclass(slots=True)
class TextInput(Encoded):
    """One text to embed; ``skip`` leading tokens (a prompt the pooling excludes) are left out of pooling."""

    skip: int = 0


@dataclass(frozen=True)
class SingleTemplate:
    """Special tokens around one text (``[CLS] t [SEP]`` for BERT), learned from the tokenizer itself."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    type_id: int | None

    @property
    def special_tokens(self) -> int:
        return len(self.prefix) + len(self.suffix)

    def build(self, ids: Sequence[int]) -> tuple[list[int], list[int] | None]:
        input_ids = [*self.prefix, *ids, *self.suffix]
        return input_ids, None if self.type_id is None else [self.type_id] * len(input_ids)


def learn_template(tokenizer: Any, uses_token_types: bool) -> SingleTemplate | None:
    """Probe the tokenizer with one-token texts; None when it does not put fixed tokens around a text."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    for word in ("hello", "world", "a", "x"):
        plain = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(plain) != 1 or plain[0] in special:
            continue
        encoded = tokenizer(word, return_token_type_ids=uses_token_types)
        ids = list(encoded["input_ids"])
        if ids.count(plain[0]) != 1:
            continue
        at = ids.index(plain[0])
        type_id = None
        if uses_token_types:
            types = set(encoded["token_type_ids"])
            if len(types) != 1:
                return None
            type_id = types.pop()
        return SingleTemplate(tuple(ids[:at]), tuple(ids[at + 1 :]), type_id)
    return None


def pool(
    hidden: torch.Tensor, mask: torch.Tensor, modes: Sequence[str], skip: torch.Tensor | None = None
) -> torch.Tensor:
    """Sentence vectors ``[rows, len(modes) * dim]`` from token vectors ``[rows, width, dim]`` (float32).

    The modes are sentence-transformers' (concatenated in the given order): ``cls`` the first attended token,
    ``max`` the element-wise maximum, ``mean`` the mean, ``mean_sqrt_len_tokens`` the sum over the square root of
    the count, ``weightedmean`` position-weighted (1, 2, ... from the first real token), ``lasttoken`` the last
    attended token. ``skip[r]`` leading real tokens of row r (a prompt) are left out of every mode.
    """
    hidden = hidden.float()
    rows, width = hidden.shape[0], hidden.shape[1]
    first = mask.to(torch.int32).argmax(dim=1)  # left padding: where the text starts
    pooled_mask = mask
    if skip is not None and bool((skip > 0).any()):
        positions = torch.arange(width, device=mask.device).unsqueeze(0)
        pooled_mask = mask.masked_fill(positions < (first + skip).unsqueeze(1), 0)
    weights = pooled_mask.unsqueeze(-1).to(hidden.dtype)
    out: list[torch.Tensor] = []
    for mode in modes:
        if mode == "cls":
            index = pooled_mask.to(torch.int32).argmax(dim=1)
            out.append(hidden[torch.arange(rows, device=hidden.device), index])
        elif mode == "max":
            out.append(hidden.masked_fill(weights == 0, float("-inf")).max(dim=1).values)
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            total = (hidden * weights).sum(dim=1)
            count = torch.clamp(weights.sum(dim=1), min=1e-9)
            out.append(total / (count if mode == "mean" else torch.sqrt(count)))
        elif mode == "weightedmean":
            position = torch.arange(1, width + 1, device=hidden.device, dtype=hidden.dtype).view(1, -1, 1)
            weighted = weights * (position - first.view(-1, 1, 1).to(hidden.dtype))
            total = (hidden * weighted).sum(dim=1)
            out.append(total / torch.clamp(weighted.sum(dim=1), min=1e-9))
        elif mode == "lasttoken":
            values, back = pooled_mask.flip(1).max(dim=1)
            back = torch.where(values == 0, width - 1, back)
            out.append((hidden * weights)[torch.arange(rows, device=hidden.device), width - back - 1])
        else:
            raise ModelConfigError(f"unknown pooling mode {mode!r}")
    return torch.cat(out, dim=-1)


class DenseLayer(torch.nn.Module):
    """sentence-transformers' Dense module: ``activation(linear(x))``, plus ``x`` (or its bias-free
    projection when the sizes differ) with ``use_residual``. Runs in float32 on the pooled vectors."""

    def __init__(self, spec: DenseSpec) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(spec.in_features, spec.out_features, bias=spec.bias)
        self.activation: torch.nn.Module = getattr(torch.nn, spec.activation)()
        self.use_residual = spec.use_residual
        self.residual = (
            torch.nn.Linear(spec.in_features, spec.out_features, bias=False)
            if spec.use_residual and spec.in_features != spec.out_features
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.activation(self.linear(x))
        if self.use_residual:
            out = out + (x if self.residual is None else self.residual(x))
        return out


def similarities(query: np.ndarray, passages: np.ndarray, kind: str) -> np.ndarray:
    """Scores ``[passages]`` of one query vector against passage vectors: ``dot`` or ``cosine`` (each vector
    divided by its L2 norm, at least 1e-12, as ``torch.nn.functional.normalize`` does)."""
    # In float64: cheap at these sizes, and identical vectors then get identical scores in every row.
    query, passages = query.astype(np.float64), passages.astype(np.float64)
    if kind == "cosine":
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        norms = np.maximum(np.linalg.norm(passages, axis=1, keepdims=True), 1e-12)
        passages = passages / norms
    result: np.ndarray = passages @ query
    return result


class BiEncoderModel:
    """A sentence-transformers embedding model: texts in, float32 vectors out.

    Loading is synchronous (seconds); construct it in a worker thread when an event loop is running.
    """

    def __init__(self, name: str, settings: ModelSettings) -> None:
        self.name = name
        self.settings = settings
        source = open_source(name, settings, log)
        self.placement: Placement = source.placement
        self._local_files_only = source.local_files_only
        try:
            self.pipeline: StPipeline = read_pipeline(self._read_json)
        except ModelConfigError as error:
            raise ModelConfigError(f"model {name}: {error}") from None
        for reason in self.pipeline.reasons:
            log.warning("model %s: %s", name, reason)
        self.similarity, similarity_reason = choose_similarity(settings.similarity, self.pipeline)

        common = source.pretrained_options(settings)
        if self.pipeline.transformer_path:
            common["subfolder"] = self.pipeline.transformer_path
        self.tokenizer = AutoTokenizer.from_pretrained(settings.source, **common)
        if self.pipeline.do_lower_case:
            self._lower_case()
        model = AutoModel.from_pretrained(settings.source, dtype=self.placement.weights_dtype, **common)
        model.eval()
        model.to(self.placement.device)
        if self.placement.quantize_int8:
            model = quantize_int8(model, self.placement.int8)
        self.model: Any = model
        self.config = model.config
        self._pretrained = common
        self.dense = [self._load_dense(spec) for spec in self.pipeline.dense]

        limit = self._limit()
        self.max_length = capped_max_length(name, settings.max_length, limit, log)
        on_cpu = self.placement.device.type == "cpu"
        self.max_batch_tokens = batch_token_budget(settings.max_batch_tokens, on_cpu, self.max_length)
        self.padding = Padding.of(self.tokenizer)
        self._uses_token_types = self.padding.token_types
        self._prefix = PrefixTokenizer(self.tokenizer)
        self.template = learn_template(self.tokenizer, self._uses_token_types)
        if self.template is not None and not self._template_fits():
            self.template = None
        if self.template is None:
            log.warning(
                "tokenizer of %s: single-text layout unknown or left truncation; texts are cut to %d characters "
                "per token of the budget, then tokenised whole",
                settings.source,
                FALLBACK_CHARS_PER_TOKEN,
            )
            if settings.max_query_tokens is not None or settings.max_passage_tokens is not None:
                self._prefix.check_offsets("max_query_tokens and max_passage_tokens")
        self.prompts = {"query": self.pipeline.query_prompt, "document": self.pipeline.document_prompt}
        self._skip = {role: self._prompt_tokens(prompt) for role, prompt in self.prompts.items()}
        # A prompt's own tokens, added to a text's token budget (counted once here, not per request).
        self._prompt_budget = {
            role: len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else 0
            for role, prompt in self.prompts.items()
        }

        self.workers, self.threads, threads = plan_workers(on_cpu, settings.workers, settings.threads)
        for reason in (*self.placement.reasons, similarity_reason):
            log.info("model %s: %s", name, reason)
        log.info("model %s: %s", name, threads)
        log.info(
            "model %s: bi-encoder %s on %s; %s; max_seq_length %d, batches up to %d padded tokens",
            name,
            settings.source,
            self.placement.describe(),
            self.pipeline.describe(),
            self.max_length,
            self.max_batch_tokens,
        )
        self.precision: PrecisionReport = guard_precision(
            self, tolerance=settings.precision_tolerance, allow_inexact=settings.allow_inexact, log=log
        )

    # -- the precision guard (bridge.scoring.precision.Checkable) ------------------------------------------

    def precision_label(self) -> str:
        return self.placement.label

    def check_scores(self) -> list[float]:
        """The check set's similarities (query vector against each passage's), as requests get them."""
        query = self.embed("query", [CHECK_QUERY])[0]
        scores: list[float] = similarities(query, self.embed("document", CHECK_PASSAGES), self.similarity).tolist()
        return scores

    def use_float32(self) -> Callable[[bool], None]:
        """Score with float32 weights until ``finish(keep)`` (the precision guard's reference)."""
        return swap_to_float32(self, AutoModel)

    # -- loading -----------------------------------------------------------------------------------------

    def _read_json(self, filename: str) -> Any:
        path = cached_file(
            self.settings.source,
            filename,
            revision=self.settings.revision,
            local_files_only=self._local_files_only,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
        if path is None:
            return None
        try:
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError) as error:
            raise ModelConfigError(f"{filename} is not readable JSON ({error})") from None

    def _load_dense(self, spec: DenseSpec) -> DenseLayer:
        """A Dense module with its weights (``model.safetensors`` or ``pytorch_model.bin`` in its folder)."""
        layer = DenseLayer(spec)
        for filename in ("model.safetensors", "pytorch_model.bin"):
            path = cached_file(
                self.settings.source,
                filename,
                subfolder=spec.path,
                revision=self.settings.revision,
                local_files_only=self._local_files_only,
                _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False,
            )
            if path is None:
                continue
            if filename.endswith(".safetensors"):
                from safetensors.torch import load_file

                state = load_file(path)
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
            try:
                layer.load_state_dict(state)
            except RuntimeError as error:
                first = str(error).splitlines()[0]
                raise ModelConfigError(f"model {self.name}: Dense {spec.path}: {first}") from None
            layer.eval()
            return layer.to(self.placement.device)
        raise ModelConfigError(f"model {self.name}: Dense {spec.path} holds no weights")

    def _lower_case(self) -> None:
        """``do_lower_case``: a Lowercase step in front of the tokenizer's normaliser, as sentence-transformers
        adds it (so "Berlin" and "berlin" give the same tokens, in the tokenizer's own Unicode rules)."""
        from tokenizers import normalizers

        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ModelConfigError(f"model {self.name}: do_lower_case needs a fast (Rust) tokenizer")
        current = backend.normalizer
        steps: list[Any] = []
        if isinstance(current, normalizers.Sequence):
            steps = [current[index] for index in range(len(current))]
        elif current is not None:
            steps = [current]
        if any(isinstance(step, normalizers.Lowercase) for step in steps):
            return
        backend.normalizer = normalizers.Sequence([normalizers.Lowercase(), *steps])

    def _limit(self) -> int:
        """Tokens per text: ``max_seq_length`` when the model sets it (capped by its position table, beyond
        which the model cannot run), else the tokenizer's limit capped by the position table."""
        declared = self.pipeline.max_seq_length
        if declared is None:
            return model_limit(self.tokenizer, self.config)
        positions = getattr(self.config, "max_position_embeddings", None)
        if isinstance(positions, int) and 0 < positions < declared:
            log.warning(
                "model %s: max_seq_length %d exceeds the model's %d positions; using %d",
                self.name,
                declared,
                positions,
                positions,
            )
            return positions
        return declared

    def _template_fits(self) -> bool:
        """Whether template + prefix ids give what the tokenizer gives for a sample text, whole and truncated."""
        template = self.template
        if template is None or getattr(self.tokenizer, "truncation_side", "right") != "right":
            return False
        room = self.max_length - template.special_tokens
        if room < 2:
            return False
        ids = self.tokenizer(_SAMPLE, add_special_tokens=False)["input_ids"]
        for keep in (len(ids), min(len(ids), room), min(len(ids) - 1, room)):
            expected = self.tokenizer(
                _SAMPLE,
                truncation=True,
                max_length=keep + template.special_tokens,
                return_token_type_ids=self._uses_token_types,
            )
            built, types = template.build(ids[:keep])
            if built != expected["input_ids"]:
                return False
            if self._uses_token_types and types != expected["token_type_ids"]:
                return False
        return True

    def _prompt_tokens(self, prompt: str) -> int:
        """Tokens pooling leaves out for a prompt (``include_prompt: false``): the prompt's tokens with the
        leading special tokens, without a trailing special token, as sentence-transformers counts them."""
        if not prompt or self.pipeline.include_prompt:
            return 0
        ids = list(self.tokenizer(prompt, truncation=True, max_length=self.max_length)["input_ids"])
        if ids and ids[-1] in set(getattr(self.tokenizer, "all_special_ids", []) or []):
            ids.pop()
        return len(ids)

    def prepare_worker(self) -> None:
        """Per worker thread: its torch thread team, and with ``warmup`` one tiny batch."""
        if self.placement.device.type == "cpu":
            torch.set_num_threads(self.threads)
        if self.settings.warmup:
            self.embed("document", ["a short passage", "a slightly longer passage to warm up with"])

    # -- tokenisation ------------------------------------------------------------------------------------

    def token_budget(self, role: str) -> int | None:
        """The configured budget of a query (``max_query_tokens``) or a document (``max_passage_tokens``)."""
        if role == "query":
            return self.settings.max_query_tokens
        return self.settings.max_passage_tokens

    def encode(self, role: str, texts: Sequence[str], should_stop: ShouldStop | None = None) -> list[Encoded]:
        """One model input per text (``role`` query or document picks the prompt); empty when stopped.

        A token budget keeps the text's first N tokens; a prompt's own tokens come on top of it (the budget is
        about the text), and ``max_seq_length`` still bounds the whole.
        """
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {ROLES}")
        prompt = self.prompts[role]
        budget = self.token_budget(role)
        try:
            if self.template is None:
                cut = self._prefix.cut_to_tokens(texts, budget, should_stop)
                items = self._encode_fallback([prompt + text for text in cut] if prompt else cut, should_stop)
            else:
                full = [prompt + text for text in texts] if prompt else list(texts)
                template = self.template
                room = self.max_length - template.special_tokens
                if budget is not None:
                    budget += self._prompt_budget[role]
                items = []
                for index, ids in enumerate(self._prefix.prefix_ids(full, budgeted(room, budget), should_stop)):
                    input_ids, types = template.build(ids)
                    items.append(TextInput(index, input_ids, types))
        except Stopped:
            return []
        skip = self._skip[role]
        if skip:
            for item in items:
                assert isinstance(item, TextInput)
                item.skip = skip
        return list(items)

    def _encode_fallback(self, texts: Sequence[str], should_stop: ShouldStop | None) -> list[TextInput]:
        chars = FALLBACK_CHARS_PER_TOKEN * self.max_length
        left = getattr(self.tokenizer, "truncation_side", "right") != "right"
        bounded = [sanitize(text[-chars:] if left else text[:chars]) for text in texts]
        items: list[TextInput] = []
        for start, end in pieces([len(text) for text in bounded]):
            if should_stop is not None and should_stop():
                raise Stopped
            encoded = self._prefix.locked(
                bounded[start:end],
                truncation=True,
                max_length=self.max_length,
                return_attention_mask=False,
                return_token_type_ids=self._uses_token_types,
                verbose=False,
            )
            types = encoded["token_type_ids"] if self._uses_token_types else [None] * (end - start)
            for offset, (ids, type_ids) in enumerate(zip(encoded["input_ids"], types, strict=True)):
                items.append(TextInput(start + offset, ids, type_ids))
        return items

    # -- inference ---------------------------------------------------------------------------------------

    def _collate(self, batch: Sequence[Encoded]) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """The batch's tensors, and how many leading prompt tokens each row leaves out of pooling (None: none)."""
        device = self.placement.device
        skips = [getattr(item, "skip", 0) for item in batch]
        skip = torch.tensor(skips, device=device) if any(skips) else None
        return collate(batch, self.padding, device), skip

    def score_batch(self, batch: Sequence[Encoded]) -> list[np.ndarray]:
        """One float32 vector per text (L2-normalised when the model has a Normalize module)."""
        features, skip = self._collate(batch)
        try:
            with torch.inference_mode():
                if self.placement.autocast is not None:
                    with torch.autocast(self.placement.device.type, dtype=self.placement.autocast):
                        hidden = self.model(**features)[0]
                else:
                    hidden = self.model(**features)[0]
                vectors = pool(hidden, features["attention_mask"], self.pipeline.pooling, skip)
                for layer in self.dense:
                    vectors = layer(vectors)
                if self.pipeline.normalize:
                    vectors = torch.nn.functional.normalize(vectors, p=2, dim=-1)
            matrix = vectors.float().cpu().numpy()
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise
        # Copies: a row view would keep its whole batch alive in the cache after the other rows left it.
        return [row.copy() for row in matrix]

    # -- synchronous convenience (warm-up, tools, tests) ---------------------------------------------------

    def embed(self, role: str, texts: Sequence[str]) -> np.ndarray:
        """Vectors ``[texts, dim]`` for ``texts``, blocking, in batches under the token budget."""
        items = sorted(self.encode(role, texts), key=len)
        out: list[np.ndarray] = [np.empty(0, dtype=np.float32)] * len(texts)
        start = 0
        while start < len(items):
            end = start + 1
            while end < len(items) and (end - start + 1) * len(items[end]) <= self.max_batch_tokens:
                end += 1
            batch = items[start:end]
            for item, vector in zip(batch, self.score_batch(batch), strict=True):
                out[item.passage] = vector
            start = end
        return np.stack(out) if out else np.zeros((0, 0), dtype=np.float32)

    def close(self) -> None:
        """Drop the weights (and the GPU memory they hold)."""
        self.model = None
        if self.placement.device.type == "cuda":
            torch.cuda.empty_cache()
