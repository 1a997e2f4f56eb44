"""What a sentence-transformers model directory says about how to embed a text, read without torch.

A sentence-transformers model is a pipeline listed in ``modules.json``: a Transformer (the Hugging Face model,
with ``max_seq_length`` and ``do_lower_case`` in its ``sentence_bert_config.json``), a Pooling module (its mode in
``1_Pooling/config.json``), optionally a Normalize module; ``config_sentence_transformers.json`` adds prompts
and the similarity function; Dense modules (a linear projection and a torch activation) may follow the
pooling. This module turns those files into a :class:`StPipeline`, or a
:class:`~bridge.scoring.base.ModelConfigError` naming what the bridge does not run (routers, custom modules,
custom activations), so ``config check`` and ``serve`` refuse the same models with the same line.

Semantics follow sentence-transformers 6.2 (``SentenceTransformer``, ``Transformer``, ``Pooling``,
``Normalize``; ``encode_query``/``encode_document`` for prompts): a directory without ``modules.json`` is a plain
Hugging Face model with mean pooling, as sentence-transformers builds one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.scoring.base import ModelConfigError

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# Legacy boolean keys, in the order sentence-transformers concatenates their vectors when several are set.
LEGACY_POOLING_KEYS = (
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_max_tokens", "max"),
    ("pooling_mode_mean_tokens", "mean"),
    ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
    ("pooling_mode_weightedmean_tokens", "weightedmean"),
    ("pooling_mode_lasttoken", "lasttoken"),
)
SIMILARITIES = ("cosine", "dot")
# Dense activations the bridge runs (torch.nn classes without parameters); sentence-transformers' default is Tanh.
DENSE_ACTIVATIONS = ("Tanh", "Identity", "ReLU", "GELU", "Sigmoid", "SiLU")


@dataclass(frozen=True)
class DenseSpec:
    """One Dense module: ``activation(linear(x))`` (+ ``x`` or its projection with ``use_residual``)."""

    path: str
    in_features: int
    out_features: int
    bias: bool = True
    activation: str = "Tanh"
    use_residual: bool = False


ReadJson = Callable[[str], Any]
"""Reads one file of the model (a path relative to its root) as JSON; None when the file does not exist."""


@dataclass(frozen=True)
class StPipeline:
    """How one text becomes one vector, and how two vectors become a score."""

    transformer_path: str = ""
    pooling: tuple[str, ...] = ("mean",)
    include_prompt: bool = True
    normalize: bool = False
    max_seq_length: int | None = None
    do_lower_case: bool = False
    similarity: str | None = None
    query_prompt: str = ""
    document_prompt: str = ""
    dense: tuple[DenseSpec, ...] = ()
    reasons: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = ["+".join(self.pooling) + " pooling"]
        parts += [f"dense {d.in_features}->{d.out_features} {d.activation}" for d in self.dense]
        if self.normalize:
            parts.append("normalised")
        if self.do_lower_case:
            parts.append("lower-cased")
        if self.query_prompt or self.document_prompt:
            parts.append("prompts")
        return ", ".join(parts)


def _module_kind(entry: Mapping[str, Any]) -> str:
    """``sentence_transformers.models.Pooling`` and ``sentence_transformers.base.modules.pooling.Pooling``
    alike: the class name, when the module is one of sentence-transformers' own."""
    kind = str(entry.get("type", ""))
    if not kind.startswith("sentence_transformers."):
        return kind
    return kind.rsplit(".", 1)[-1]


def pooling_modes(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The pooling modes of a ``1_Pooling/config.json``: ``pooling_mode`` (a name or a list), else the legacy
    ``pooling_mode_*`` booleans in sentence-transformers' concatenation order, else mean."""
    mode = config.get("pooling_mode")
    if mode is not None:
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    else:
        modes = tuple(name for key, name in LEGACY_POOLING_KEYS if config.get(key))
        modes = modes or ("mean",)
    unknown = [name for name in modes if name not in POOLING_MODES]
    if unknown or not modes:
        raise ModelConfigError(f"pooling mode {unknown or modes} is not one of {', '.join(POOLING_MODES)}")
    return modes


def _join(folder: str, name: str) -> str:
    return f"{folder.strip('/')}/{name}" if folder.strip("/") else name


def _prompts(st_config: Mapping[str, Any]) -> tuple[str, str]:
    """(query prompt, document prompt) as sentence-transformers 6.2's ``encode_query``/``encode_document`` apply
    them: the prompts named ``query`` and ``document``, else none.

    Its documentation names ``passage`` and ``corpus`` as fallbacks for documents and a ``default_prompt_name``,
    but a ``SentenceTransformer`` always holds ``query`` and ``document`` entries ("" unless the model sets them),
    so those fallbacks never apply; the bridge embeds exactly what the reference does.
    """
    prompts = st_config.get("prompts") or {}
    if not isinstance(prompts, Mapping):
        raise ModelConfigError("config_sentence_transformers.json: prompts is not an object")
    return str(prompts.get("query") or ""), str(prompts.get("document") or "")


def read_pipeline(read: ReadJson) -> StPipeline:
    """The pipeline a sentence-transformers directory describes; raises :class:`ModelConfigError` for what the
    bridge does not run exactly."""
    st_config = read("config_sentence_transformers.json") or {}
    if not isinstance(st_config, Mapping):
        raise ModelConfigError("config_sentence_transformers.json is not an object")
    similarity = st_config.get("similarity_fn_name")
    if similarity is not None and similarity not in SIMILARITIES:
        raise ModelConfigError(
            f"the model's similarity_fn_name {similarity!r} is not supported (cosine, dot); "
            "set similarity: cosine or dot to override it"
        )
    query_prompt, document_prompt = _prompts(st_config)
    modules = read("modules.json")
    if modules is None:
        return StPipeline(
            similarity=similarity,
            query_prompt=query_prompt,
            document_prompt=document_prompt,
            reasons=(
                "no modules.json: a plain Hugging Face model, mean pooling (as sentence-transformers does)",
            ),
        )
    if not isinstance(modules, list) or not modules:
        raise ModelConfigError("modules.json does not list the model's modules")
    kinds = [_module_kind(entry) if isinstance(entry, Mapping) else "?" for entry in modules]
    if kinds[0] != "Transformer":
        raise ModelConfigError(f"modules.json starts with {kinds[0]!r}; the bridge needs a Transformer first")
    if len(kinds) < 2 or kinds[1] != "Pooling":
        raise ModelConfigError("modules.json has no Pooling module right after the Transformer")
    rest = kinds[2:]
    normalize = bool(rest) and rest[-1] == "Normalize"
    middle = rest[:-1] if normalize else rest
    if any(kind != "Dense" for kind in middle):
        unsupported = ", ".join(sorted({kind for kind in middle if kind != "Dense"}))
        raise ModelConfigError(
            f"modules.json lists {unsupported} after pooling; the bridge runs Transformer, Pooling, Dense "
            "modules and a final Normalize only"
        )
    reasons: list[str] = []
    dense = tuple(
        _dense(str(entry.get("path", "") or ""), read, reasons) for entry in modules[2 : 2 + len(middle)]
    )
    transformer_path = str(modules[0].get("path", "") or "")
    bert_config = read(_join(transformer_path, "sentence_bert_config.json")) or {}
    pooling_config = read(_join(str(modules[1].get("path", "") or ""), "config.json"))
    if not isinstance(pooling_config, Mapping):
        raise ModelConfigError("the Pooling module has no config.json")
    modes = pooling_modes(pooling_config)
    include_prompt = bool(pooling_config.get("include_prompt", True))
    max_seq_length = bert_config.get("max_seq_length")
    if max_seq_length is not None and (not isinstance(max_seq_length, int) or max_seq_length <= 0):
        raise ModelConfigError(
            f"sentence_bert_config.json: max_seq_length {max_seq_length!r} is not positive"
        )
    return StPipeline(
        transformer_path=transformer_path,
        pooling=modes,
        include_prompt=include_prompt,
        normalize=normalize,
        max_seq_length=max_seq_length,
        do_lower_case=bool(bert_config.get("do_lower_case", False)),
        similarity=similarity,
        query_prompt=query_prompt,
        document_prompt=document_prompt,
        dense=dense,
        reasons=tuple(reasons),
    )


def _dense(path: str, read: ReadJson, reasons: list[str]) -> DenseSpec:
    """A Dense module's settings as sentence-transformers loads them: an activation that is not a ``torch.``
    class falls back to Tanh (it would need trust_remote_code), one that is a torch class we do not run is
    refused; a Dense reading or writing anything but the sentence embedding is refused."""
    config = read(_join(path, "config.json"))
    if not isinstance(config, Mapping):
        raise ModelConfigError(f"the Dense module {path or '(root)'} has no config.json")
    for key in ("module_input_name", "module_output_name"):
        if config.get(key) not in (None, "sentence_embedding"):
            raise ModelConfigError(
                f"the Dense module {path} maps {key} {config[key]!r}; only sentence_embedding"
            )
    activation = str(config.get("activation_function") or "torch.nn.modules.activation.Tanh")
    if not activation.startswith("torch."):
        reasons.append(
            f"Dense {path}: activation {activation} is not a torch class; Tanh, as sentence-transformers "
            "falls back to without trust_remote_code"
        )
        name = "Tanh"
    else:
        name = activation.rsplit(".", 1)[-1]
        if name not in DENSE_ACTIVATIONS:
            raise ModelConfigError(
                f"the Dense module {path}: activation {activation} is not one of {', '.join(DENSE_ACTIVATIONS)}"
            )
    try:
        return DenseSpec(
            path=path,
            in_features=int(config["in_features"]),
            out_features=int(config["out_features"]),
            bias=bool(config.get("bias", True)),
            activation=name,
            use_residual=bool(config.get("use_residual", False)),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ModelConfigError(f"the Dense module {path}: config.json lacks {error}") from None


def choose_similarity(configured: str, pipeline: StPipeline) -> tuple[str, str]:
    """The similarity to score with, and why: configured, else the model's own, else the dot product."""
    if configured != "auto":
        return configured, f"similarity {configured}: configured"
    if pipeline.similarity is not None:
        return pipeline.similarity, f"similarity {pipeline.similarity}: the model's similarity_fn_name"
    if pipeline.normalize:
        return "dot", "similarity dot: the model normalises its vectors, so the dot product is the cosine"
    return "dot", "similarity dot: the model declares none and does not normalise (raw dot product)"
