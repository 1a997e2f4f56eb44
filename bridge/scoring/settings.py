"""How one named model is loaded and run; part of the bridge's config (``models.<name>``)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    PositiveInt,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

_HTTP_URL: TypeAdapter[HttpUrl] = TypeAdapter(HttpUrl)


class RemoteSettings(BaseModel):
    """A reranking server (or several serving the same model) that scores for us.

    ``protocol: tei`` speaks text-embeddings-inference's ``POST /rerank`` (``/rerank`` is appended to a URL that
    lacks it); ``protocol: cohere`` the ``POST {url}`` shape shared by Cohere, Jina, vLLM and infinity, the URL
    used as given (``.../rerank``, ``.../v1/rerank``, ``.../v2/rerank``).
    """

    model_config = ConfigDict(extra="forbid")

    protocol: Literal["tei", "cohere"] = Field(
        "tei", description="tei: text-embeddings-inference /rerank; cohere: Cohere-style {documents} -> {results}"
    )
    url: HttpUrl | None = Field(None, description="the one server; or give `urls`")
    urls: list[HttpUrl] | None = Field(
        None, description="several servers of the same model: least in-flight first, failing ones ejected"
    )
    model: str | None = Field(
        None, min_length=1, description="cohere: sent as \"model\" (required); tei servers serve one model"
    )
    score_activation: Literal["sigmoid", "identity"] = Field(
        "sigmoid",
        description="cohere: what the server's relevance_score is: a probability (sigmoid, most servers) or a "
        "logit (identity); converted to the model's `activation`",
    )
    raw_scores: bool = Field(
        False,
        description="cohere: also send {\"raw_scores\": true} (infinity offers it); relevance_score is a logit then",
    )
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
    truncate: bool = Field(
        True, description="tei: ask the server to truncate over-long pairs instead of failing"
    )
    eject_s: float = Field(
        5.0,
        gt=0,
        description="an endpoint that failed or timed out gets no traffic for this long (doubled per consecutive "
        "failure, at most 8x), then one probe request",
    )

    @field_validator("urls", mode="before")
    @classmethod
    def _each_url_checked_without_quoting_it(cls, value: object) -> object:
        """An entry's own error would be reported at ``urls.<i>`` with its value, which may hold a password
        (``http://user:pw`` with the host forgotten reads the password as a port): say which entry, not what."""
        if isinstance(value, list):
            for index, item in enumerate(value):
                try:
                    _HTTP_URL.validate_python(item)
                except ValidationError as error:
                    raise ValueError(f"entry {index} is not a valid URL: {error.errors()[0]['msg']}") from None
        return value

    @model_validator(mode="after")
    def _one_list_of_servers(self) -> RemoteSettings:
        """Exactly one of ``url`` and ``urls``; a list that is empty or names a server twice is a mistake."""
        if (self.url is None) == (self.urls is None):
            raise ValueError("give either `url` (one server) or `urls` (several), not both and not neither")
        if self.urls is not None:
            if not self.urls:
                raise ValueError("`urls` is empty: list at least one server")
            seen = [str(url).rstrip("/") for url in self.urls]
            if len(set(seen)) != len(seen):
                raise ValueError("`urls` names the same server twice")
        if self.api_key is not None and any(url.username or url.password for url in self._servers()):
            raise ValueError(
                "api_key and a user:password in the URL would both set the Authorization header; keep one"
            )
        return self

    def _servers(self) -> list[HttpUrl]:
        return self.urls if self.urls is not None else [self.url] if self.url is not None else []

    @model_validator(mode="after")
    def _protocol_options(self) -> RemoteSettings:
        """Options one protocol has and the other would silently ignore are refused, as is a missing ``model``."""
        if self.protocol == "cohere":
            if self.model is None:
                raise ValueError("protocol cohere needs `model` (the name the server knows the model by)")
            if self.raw_scores and "score_activation" in self.model_fields_set and self.score_activation != "identity":
                raise ValueError("raw_scores: true makes relevance_score a logit; remove score_activation: sigmoid")
            return self
        ignored = sorted({"model", "score_activation", "raw_scores"} & self.model_fields_set)
        if ignored:
            raise ValueError(
                f"{', '.join(ignored)} {'applies' if len(ignored) == 1 else 'apply'} to protocol: cohere only (tei: raw_scores follows the model's "
                "activation); remove them or set protocol: cohere"
            )
        return self

    @property
    def served_activation(self) -> Literal["sigmoid", "identity"]:
        """What a cohere server's ``relevance_score`` is: a logit when ``raw_scores`` asks for one."""
        return "identity" if self.raw_scores else self.score_activation

    @property
    def endpoint_urls(self) -> list[str]:
        """The configured server URLs as strings, in configuration order (one for ``url``)."""
        return [str(url) for url in self._servers()]


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
    backend: Literal["torch", "openvino"] = Field(
        "torch",
        description="what runs a local cross-encoder's batches: torch, or OpenVINO on the CPU (the model is "
        "converted once by openvino.convert_model and cached under export_dir; needs pip install openvino)",
    )
    export_dir: str | None = Field(
        None,
        description="backend openvino: where converted models are cached; default "
        "$XDG_CACHE_HOME/rerank-bridge/openvino (~/.cache/rerank-bridge/openvino)",
    )
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
    remote: RemoteSettings | None = Field(
        None, description="score on remote servers (TEI or Cohere-style /rerank) instead of in-process"
    )

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
    def _backend_options(self) -> ModelSettings:
        """Refuse what ``backend: openvino`` would silently ignore or cannot do, each with the reason."""
        if self.backend == "torch":
            if self.export_dir is not None:
                raise ValueError("export_dir applies to backend: openvino only; remove it or set backend: openvino")
            return self
        refused = []
        if self.remote is not None:
            refused.append("remote (a remote server scores with its own runtime; remove backend)")
        if self.kind != "cross-encoder":
            refused.append("kind bi-encoder (the OpenVINO engine runs cross-encoders; use backend: torch)")
        if self.quantize != "none":
            refused.append(
                "quantize: int8 (OpenVINO int8 needs NNCF post-training quantisation, which the bridge does not "
                "run; use dtype auto/bfloat16, or backend: torch for dynamic int8)"
            )
        if self.device not in ("auto", "cpu"):
            refused.append(f"device {self.device!r} (the OpenVINO engine runs on the CPU: use auto or cpu)")
        if refused:
            raise ValueError(f"backend {self.backend} does not take " + "; ".join(refused))
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
