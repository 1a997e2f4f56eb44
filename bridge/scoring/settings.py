"""How one named model is loaded and run; part of the bridge's config (``models.<name>``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, PositiveInt, SecretStr, model_validator


class RemoteSettings(BaseModel):
    """A text-embeddings-inference compatible ``POST /rerank`` server that scores for us."""

    model_config = ConfigDict(extra="forbid")

    url: HttpUrl
    timeout_s: float = Field(10.0, gt=0, description="per HTTP call")
    retries: int = Field(2, ge=0, description="extra tries on connection errors and 5xx, within the deadline")
    max_client_batch_size: PositiveInt = Field(32, description="texts per call; larger requests are split")
    api_key: SecretStr | None = Field(None, description="sent as a Bearer token")
    deadline_s: float | None = Field(
        None,
        gt=0,
        description="budget for one score() call, retries included; default timeout_s * (retries + 1)",
    )
    backoff_s: float = Field(0.1, ge=0, description="first retry delay, doubled per retry")
    truncate: bool = Field(True, description="ask the server to truncate over-long pairs instead of failing")


class ModelSettings(BaseModel):
    """One model: a cross-encoder, local (transformers) or remote (TEI ``/rerank``), or a local bi-encoder.

    A bi-encoder (a sentence-transformers embedding model) scores a passage by the similarity of its vector to
    the query's, so each passage's vector is computed once and cached; options that only mean something for a
    cross-encoder's pair logits are refused for it (:meth:`_bi_encoder_options`).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["cross-encoder", "bi-encoder"] = Field(
        "cross-encoder",
        description="cross-encoder: scores (query, passage) pairs; bi-encoder: a sentence-transformers "
        "embedding model, score = similarity of the query's and the passage's vectors",
    )
    source: str = Field(..., description="Hugging Face Hub id or local directory")
    aliases: list[str] = Field(
        default_factory=list,
        description="other names requests may use for this model: an OpenSearch ml-commons model_id, "
        "an Elastic inference_id",
    )
    revision: str | None = None
    trust_remote_code: bool = False
    device: str = Field("auto", description="auto (cuda, mps, cpu), or a torch device such as cuda:1")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    quantize: Literal["none", "int8"] = Field("none", description="int8 dynamic quantisation, CPU only")
    int8_reduce_range: bool | None = Field(
        None,
        description="quantize int8: activations at 7 bits (true) or 8 (false); default by CPU family: 7 without "
        "VNNI/AMX (AVX2 int8 kernels saturate at 8), 8 with them",
    )
    activation: Literal["auto", "identity", "sigmoid", "softmax"] = "auto"
    label: str | None = Field(None, description="for multi-label models: which label's probability scores")
    max_length: PositiveInt | None = Field(None, description="default: the model's own limit")
    long_documents: Literal["truncate", "chunk"] = "truncate"
    chunk_stride: int = Field(64, ge=0, description="tokens shared by neighbouring windows when chunking")
    max_chunks: PositiveInt = Field(
        16, description="windows scored per passage when chunking; the rest is ignored"
    )
    max_passage_tokens: PositiveInt | None = Field(
        None,
        description="each passage is cut to its first N word-piece tokens before pairing (fewer tokens per pair: "
        "faster, less of the passage seen); chunking then splits what is left. Bi-encoder: each document text. "
        "None: the whole passage, up to the model's max_length",
    )
    max_query_tokens: PositiveInt | None = Field(
        None,
        description="the query is cut to its first N word-piece tokens before pairing (bi-encoder: before "
        "embedding); None: the whole query, up to the model's max_length",
    )
    max_batch_tokens: PositiveInt | None = Field(
        None,
        description="padded tokens per model call; default 16384 on a GPU, 4096 on the CPU (cache-friendly)",
    )
    max_wait_ms: float = Field(2.0, ge=0, description="how long a batch waits to fill up")
    max_queue_pairs: PositiveInt = Field(
        20000, description="pairs waiting; beyond it callers get QueueFullError"
    )
    cache_size: int = Field(
        20000,
        ge=0,
        description="LRU entries; 0 turns the cache off. Cross-encoder: (query, passage) scores. Bi-encoder: "
        "passage vectors (plus up to cache_size // 8 query vectors); memory is about entries x dimension x 4 bytes",
    )
    similarity: Literal["auto", "cosine", "dot"] = Field(
        "auto",
        description="bi-encoder only: auto takes the model's similarity_fn_name, else the dot product (which "
        "is the cosine for a model that normalises its vectors)",
    )
    workers: PositiveInt | None = Field(
        None,
        description="inference threads, each running its own batches; default 2 on a CPU with 2+ cores, 1 on GPU",
    )
    threads: PositiveInt | None = Field(
        None, description="torch intra-op threads per worker on CPU; default usable cores / workers"
    )
    warmup: bool = Field(True, description="score one small batch at start so no user request pays for it")
    allow_inexact: bool = Field(
        False,
        description="keep a non-float32 precision (int8, bfloat16, float16) whose scores miss float32's by more "
        "than precision_tolerance on the start-up check (a WARNING says so); false falls back to float32",
    )
    precision_tolerance: float = Field(
        0.02,
        ge=0,
        description="largest |score difference| to float32 allowed on the start-up check set (activated score "
        "for a cross-encoder, similarity for a bi-encoder); the top-10 order must also be the same",
    )
    remote: RemoteSettings | None = Field(None, description="score on a TEI server instead of in-process")

    @model_validator(mode="after")
    def _token_budgets_need_the_local_tokenizer(self) -> ModelSettings:
        """Token budgets are applied by the bridge's own tokenising; a remote server tokenises by its own rules."""
        if self.remote is not None and (self.max_passage_tokens is not None or self.max_query_tokens is not None):
            raise ValueError(
                "max_passage_tokens and max_query_tokens apply to local models only (the bridge cuts the tokens); "
                "remove them, or the remote server's own truncation applies"
            )
        return self

    @model_validator(mode="after")
    def _int8_options(self) -> ModelSettings:
        """``int8_reduce_range`` without ``quantize: int8`` would be silently ignored: refuse it."""
        if self.int8_reduce_range is not None and self.quantize != "int8":
            raise ValueError("int8_reduce_range applies to quantize: int8 only; remove it or set quantize: int8")
        return self

    @model_validator(mode="after")
    def _bi_encoder_options(self) -> ModelSettings:
        """Refuse, at config time, cross-encoder options that a bi-encoder cannot honour (and vice versa)."""
        if self.kind == "cross-encoder":
            if self.similarity != "auto":
                raise ValueError("similarity applies to kind: bi-encoder only; remove it")
            return self
        refused = []
        if self.activation != "auto":
            refused.append("activation (a similarity has no logits to activate)")
        if self.label is not None:
            refused.append("label (a bi-encoder has no labels)")
        if self.long_documents != "truncate":
            refused.append("long_documents: chunk (a passage is embedded once, truncated at max_seq_length)")
        if self.remote is not None:
            refused.append("remote (TEI /rerank serves cross-encoders; bi-encoders run in-process)")
        if refused:
            raise ValueError("kind bi-encoder does not take " + "; ".join(refused))
        return self
