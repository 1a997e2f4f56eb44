"""The bridge's configuration: environment (``BRIDGE_`` prefix, ``__`` for nesting) over an optional YAML file."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    PositiveInt,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from bridge.redact import hide_url_credentials
from bridge.scoring.settings import ModelSettings


class ConfigError(Exception):
    """The configuration cannot be used; the message names the field and the value."""


class UpstreamSettings(BaseModel):
    """The engine the bridge stands in front of."""

    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = HttpUrl("http://127.0.0.1:9200")
    ca_bundle: Path | None = Field(None, description="PEM file of CAs that sign the engine's certificate")
    verify_tls: bool = True
    client_cert: Path | None = Field(None, description="PEM client certificate for mutual TLS")
    client_key: Path | None = None
    username: str | None = Field(None, description="used only when the client sends no credentials")
    password: SecretStr | None = None
    api_key: SecretStr | None = Field(
        None, description="sent as 'Authorization: ApiKey …' when the client sends none"
    )
    connect_timeout_s: float = Field(10.0, gt=0)
    timeout_s: float = Field(
        120.0, gt=0, description="longest the engine may stay silent (before its answer or within it); beyond it, 504"
    )
    max_connections: PositiveInt = 256
    pool_timeout_s: float = Field(
        10.0, gt=0, description="longest a request waits for one of max_connections; beyond it, 503"
    )

    @model_validator(mode="after")
    def _credentials_from_url(self) -> UpstreamSettings:
        self.take_url_credentials()
        return self

    def take_url_credentials(self) -> None:
        """``https://user:password@host:9200`` works as clients of the engine expect; the credentials move to
        ``username``/``password``, so the URL the bridge logs and ``config check`` prints holds no secret."""
        url = self.url
        if url.username is None and url.password is None:
            return
        if self.username is not None or self.password is not None or self.api_key is not None:
            raise ValueError(
                "upstream.url carries credentials and upstream.username, password or api_key is set too: "
                "give them in one place"
            )
        self.username = unquote(url.username or "")
        self.password = SecretStr(unquote(url.password or ""))
        assert url.host is not None  # HttpUrl requires one
        self.url = HttpUrl.build(
            scheme=url.scheme,
            host=url.host,
            port=url.port,
            path=(url.path or "").lstrip("/") or None,
            query=url.query,
        )


class ServerSettings(BaseModel):
    """Where the bridge listens."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(9400, ge=0, le=65535)
    drain_timeout_s: float = Field(
        30.0, ge=0, description="on SIGTERM, how long in-flight requests may finish"
    )
    workers: int = Field(
        1, ge=1, description="processes sharing the port (SO_REUSEPORT); each loads its own models"
    )
    client_body_timeout_s: float = Field(
        60.0, gt=0, description="longest a client may pause while sending a request body; beyond it, 408"
    )
    client_write_timeout_s: float = Field(
        60.0, gt=0, description="longest a client may leave an answer unread; beyond it, the connection closes"
    )


class RuleSettings(BaseModel):
    """Which searches are reranked, and how: matched in order against the request's index expression."""

    model_config = ConfigDict(extra="forbid")

    indices: list[str] = Field(..., min_length=1, description="index names or patterns (wildcards allowed)")
    fields: list[str] = Field(
        ..., min_length=1, description="passage fields: dotted paths in _source or fields"
    )
    separator: str = Field("\n", description="joins several fields and multi-valued fields")
    window: PositiveInt | None = Field(
        None,
        description="hits fetched and reranked; default: 100 when the rule's model runs on a GPU (or remotely) "
        "or is a bi-encoder, 20 for a cross-encoder on a CPU, about what a CPU reranks within timeout_ms's 2 s",
    )
    max_window: PositiveInt = Field(1000, description="cap on window, also for ext.rerank.window")
    model: str | None = Field(None, description="model name; default: the only or first configured model")
    query_text: str = Field(
        "auto",
        description="auto (from the query DSL), '$.json.path' into the request, or 'param:NAME' of a template",
    )
    keep_previous_score: bool = False
    previous_score_field: str = Field(
        "_engine_score", description="hit.fields key holding the engine's score"
    )
    timeout_ms: PositiveInt = Field(
        2000, description="rerank budget; beyond it the engine's order is answered"
    )
    enabled: bool = Field(True, description="false: matching searches rerank only when ext.rerank asks")
    combine: Literal["replace", "linear", "rrf"] = Field(
        "replace",
        description="replace: the model's score; linear: alpha·norm(model) + (1-alpha)·norm(engine); "
        "rrf: 1/(rank_constant + engine rank) + 1/(rank_constant + model rank)",
    )
    alpha: float = Field(0.5, ge=0, le=1, description="linear: the model's weight, the engine's is 1 - alpha")
    normalization: Literal["min_max", "z_score", "none"] = Field(
        "min_max", description="linear: how both scores are put on one scale over the window"
    )
    rank_constant: PositiveInt = Field(
        60, description="rrf: k, as Elasticsearch's and OpenSearch's RRF name it"
    )
    min_score: float | None = Field(
        None, allow_inf_nan=False, description="hits whose final score is below it leave the answer"
    )
    top_n: PositiveInt | None = Field(
        None,
        description="only the best n of the window are reranked; the rest keep the engine's order after them",
    )
    score_transform: Literal["none", "positive"] = Field(
        "none",
        description="positive: max(s, 0) + min(exp(s), 1) on the model score first (Elastic's normalisation)",
    )


class LimitsSettings(BaseModel):
    """What the bridge refuses or cuts short, so one client cannot exhaust it."""

    model_config = ConfigDict(extra="forbid")

    max_search_body_bytes: PositiveInt = Field(10 * 1024 * 1024, description="searches larger than this: 413")
    max_window: PositiveInt = Field(1000, description="hard cap for any rule or request window")
    search_deadline_s: float | None = Field(
        None, gt=0, description="whole budget of an intercepted search (engine + rerank); beyond it: 504"
    )
    over_limit: Literal["reject", "fail_open"] = Field(
        "fail_open",
        description="queue full / deadline: answer the engine's order (fail_open) or 429/504 (reject)",
    )


class AsyncSearchSettings(BaseModel):
    """Kibana's ``_async_search`` for searches the bridge reranks: results kept in memory, bounded, expiring."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="false: every _async_search request is relayed to the engine untouched")
    max_entries: PositiveInt = Field(
        1000, description="async searches kept at once (running or done); beyond it, 429 unless a done one can go"
    )
    max_bytes: PositiveInt = Field(
        256 * 1024 * 1024, description="bytes of kept results in all; the oldest done results go first beyond it"
    )
    max_response_bytes: PositiveInt = Field(
        10 * 1024 * 1024,
        description="largest result kept (Elastic's search.max_async_search_response_size); beyond it, a 400",
    )
    max_keep_alive_s: float = Field(
        5 * 24 * 3600.0, gt=0, description="cap on a request's keep_alive (Elastic's default keep_alive is 5d)"
    )

    @model_validator(mode="after")
    def _response_fits(self) -> AsyncSearchSettings:
        if self.max_response_bytes > self.max_bytes:
            raise ValueError("async_search.max_response_bytes must not exceed async_search.max_bytes")
        return self


class SearchPipelineSettings(BaseModel):
    """An OpenSearch search pipeline the bridge knows by id (``?search_pipeline=<id>``), written as OpenSearch's
    ``PUT _search/pipeline/<id>`` body: its ``rerank`` processor with ``ml_opensearch`` runs in the bridge, with
    the model its ``model_id`` names (a model name or alias); every other processor runs on the engine, sent as
    an inline pipeline, so the engine need not have neural-search or ml-commons."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = None
    version: int | None = None
    request_processors: list[dict[str, Any]] = Field(default_factory=list)
    response_processors: list[dict[str, Any]] = Field(
        ...,
        min_length=1,
        description="must hold one {rerank: {ml_opensearch: {model_id}, context: {document_fields}}}",
    )
    phase_results_processors: list[dict[str, Any]] = Field(default_factory=list)

    def rerank_problem(self, models: Mapping[str, ModelSettings]) -> str | None:
        """Why the bridge cannot apply this pipeline's rerank processor; None when it can."""
        found = [
            p["rerank"]
            for p in self.response_processors
            if isinstance(p.get("rerank"), dict) and "ml_opensearch" in p["rerank"]
        ]
        if len(found) != 1:
            return f"needs exactly one rerank response processor with ml_opensearch, has {len(found)}"
        rerank = found[0]
        ml, context = rerank.get("ml_opensearch"), rerank.get("context")
        model_id = ml.get("model_id") if isinstance(ml, dict) else None
        if not isinstance(model_id, str):
            return "rerank.ml_opensearch.model_id must be a string"
        names = set(models).union(*(model.aliases for model in models.values()))
        if model_id not in names:
            known = ", ".join(sorted(names)) or "none configured"
            return f"rerank.ml_opensearch.model_id: unknown model '{model_id}' (models and aliases: {known})"
        fields = context.get("document_fields") if isinstance(context, dict) else None
        if not isinstance(fields, list) or not fields or not all(isinstance(f, str) and f for f in fields):
            return "rerank.context.document_fields must be a non-empty list of field names"
        return None


class AdminSettings(BaseModel):
    """The bridge's own pages under ``/_bridge/``, beyond health, readiness and metrics."""

    model_config = ConfigDict(extra="forbid")

    compare: bool = Field(
        False,
        description="serve /_bridge/compare: engine order and reranked order side by side, searched with the "
        "caller's own credentials; off unless asked for",
    )


class Settings(BaseSettings):
    """Everything the bridge reads at start."""

    model_config = SettingsConfigDict(
        env_prefix="BRIDGE_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    upstream: UpstreamSettings = UpstreamSettings()
    server: ServerSettings = ServerSettings()
    models: dict[str, ModelSettings] = Field(default_factory=dict)
    rules: list[RuleSettings] = Field(default_factory=list)
    limits: LimitsSettings = LimitsSettings()
    async_search: AsyncSearchSettings = AsyncSearchSettings()
    admin: AdminSettings = AdminSettings()
    search_pipelines: dict[str, SearchPipelineSettings] = Field(
        default_factory=dict,
        description="OpenSearch search pipelines by id whose rerank processor the bridge applies itself",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    upstream_url: HttpUrl | None = Field(None, exclude=True, description="shorthand for upstream.url")
    _windows: dict[str, int] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check_references(self) -> Settings:
        if self.upstream_url is not None:
            self.upstream.url = self.upstream_url
            self.upstream_url = None
            self.upstream.take_url_credentials()
        for number, rule in enumerate(self.rules):
            if rule.model is not None and rule.model not in self.models:
                known = ", ".join(sorted(self.models)) or "none configured"
                raise ValueError(f"rules.{number}.model: unknown model '{rule.model}' (models: {known})")
            if not self.models:
                raise ValueError(f"rules.{number}: a rule needs a model, but no models are configured")
            if rule.window is None:
                rule.window = self.default_window(rule.model or next(iter(self.models)))
        self._check_aliases()
        for name, pipeline in self.search_pipelines.items():
            problem = pipeline.rerank_problem(self.models)
            if problem is not None:
                raise ValueError(f"search_pipelines.{name}: {problem}")
        return self

    def _check_aliases(self) -> None:
        """A name a request may use (model_id, inference_id) must mean one model only."""
        owner: dict[str, str] = {}
        for model, settings in self.models.items():
            for alias in settings.aliases:
                if alias in self.models:
                    raise ValueError(f"models.{model}.aliases: '{alias}' is the name of a model")
                if alias in owner:
                    where = "listed twice" if owner[alias] == model else f"also an alias of '{owner[alias]}'"
                    raise ValueError(f"models.{model}.aliases: '{alias}' is {where}")
                owner[alias] = model

    def default_window(self, model: str) -> int:
        """:func:`default_window` of a configured model, resolved once (it asks torch about the device)."""
        if model not in self._windows:
            self._windows[model] = default_window(self.models[model])
        return self._windows[model]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the YAML file, which arrives as init arguments.
        return env_settings, init_settings, file_secret_settings

    def default_model(self) -> str | None:
        return next(iter(self.models), None)


GPU_WINDOW = 100
CPU_WINDOW = 20


def default_window(model: ModelSettings) -> int:
    """A window the model's device reranks within the default 2 s budget.

    Measured with a MiniLM-L6 cross-encoder on ~200-word abstracts, 2-core Xeon: float32 ~40 ms a passage, so 100
    passages take 4 s and fail open; 20 take 0.8 s. A GPU (or a remote server) takes 100 in a batch or two.

    A bi-encoder gets 100 on any device: once its passages' vectors are cached a query costs one text's
    encoding plus a dot product (``bench/semantic.py``, 20 NFCorpus queries x 100 passages, 2-core Xeon with AMX
    under load: 11-17 ms, against 1.7-1.9 s bf16 and 4.5-6.8 s float32 for the cross-encoder). A cold window of
    100 took 1.4-1.5 s (bf16, the default on AMX) to 4.0-4.4 s (float32); when it outlasts the budget the request
    fails open but its passages' vectors are still finished and cached, so the following queries are fast.
    """
    if model.remote is not None or model.kind == "bi-encoder":
        return GPU_WINDOW
    device = model.device.split(":", 1)[0]
    if device == "auto":
        import torch  # only here: reading the configuration should not need torch otherwise

        mps = getattr(torch.backends, "mps", None)
        accelerated = torch.cuda.is_available() or (mps is not None and mps.is_available())
    else:
        accelerated = device in ("cuda", "mps")
    return GPU_WINDOW if accelerated else CPU_WINDOW


def load_settings(path: Path | None = None) -> Settings:
    """Read the YAML file (if any) under the environment; raise ConfigError naming each bad field and value."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError(f"cannot read config file {path}: {error.strerror}") from error
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(error)}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                f"config file {path} must hold a mapping at the top, not {type(loaded).__name__}"
            )
        data = loaded or {}
    try:
        return Settings(**data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error)) from error
    except SettingsError as error:  # a BRIDGE_* value that is not valid JSON; the message names no value
        raise ConfigError(f"invalid configuration: {error}") from error


@dataclass(frozen=True)
class Override:
    """One command-line value (``--port 9500``) for one field of a section (``server.port``)."""

    flag: str
    section: Literal["server", "upstream"]
    key: str
    value: Any


def apply_overrides(settings: Settings, overrides: Sequence[Override]) -> Settings:
    """The settings with command-line values, validated by the same models as YAML and ``BRIDGE_*`` (ranges,
    URL credentials split off). Credentials in an overriding ``upstream.url`` replace the configured ones."""
    updates: dict[str, BaseModel] = {}
    problems: list[str] = []
    for section in dict.fromkeys(override.section for override in overrides):
        given = [override for override in overrides if override.section == section]
        current: BaseModel = getattr(settings, section)
        values = current.model_dump()
        for override in given:
            values[override.key] = override.value
            if section == "upstream" and override.key == "url" and _has_userinfo(override.value):
                values.update(username=None, password=None, api_key=None)
        try:
            updates[section] = type(current).model_validate(values)
        except ValidationError as error:
            flags: dict[tuple[str, ...], str] = {(section, override.key): override.flag for override in given}
            problems.extend(describe_validation_error(error, prefix=(section,), flags=flags).splitlines()[1:])
    if problems:
        raise ConfigError("\n".join(["invalid configuration:", *problems]))
    return settings.model_copy(update=updates)


def _has_userinfo(url: object) -> bool:
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
        return parts.username is not None or parts.password is not None
    except ValueError:
        return False


# Fields whose values never appear in an error message or in `config check`'s output.
_SECRET_FIELDS = frozenset({"password", "api_key", "token", "secret"})
def describe_validation_error(
    error: ValidationError,
    prefix: tuple[str, ...] = (),
    flags: Mapping[tuple[str, ...], str] | None = None,
) -> str:
    """One line per problem: the field (and the flag that set it), what is wrong, and the value, unless it
    is, or may be, a secret: secret fields, unknown keys (a misplaced password) and URL credentials."""
    lines = ["invalid configuration:"]
    for problem in error.errors():
        loc = (*prefix, *(str(part) for part in problem["loc"]))
        where = ".".join(loc) or "(top level)"
        flag = (flags or {}).get(loc)
        if flag is not None:
            where = f"{flag} ({where})"
        lines.append(f"  {where}: {problem['msg']}{_shown(loc, problem)}")
    return "\n".join(lines)


def _shown(loc: tuple[str, ...], problem: Any) -> str:
    """The bad value, only when it cannot hold a secret: a scalar of a plain leaf field. A whole section (a
    list, a mapping, or a string where a section belongs) may hold a password, and so may an unknown key."""
    value = problem.get("input")
    if _SECRET_FIELDS.intersection(loc):
        hint = "; quote it in YAML" if problem.get("type") == "string_type" else ""
        return f" (the value is not shown{hint})"
    if problem.get("type") == "extra_forbidden":
        return ""
    if not isinstance(value, str | int | float | bool) or problem.get("type") in _SECTION_ERRORS:
        return " (the value is not shown: it may hold credentials)" if value is not None else ""
    shown = hide_url_credentials(json.dumps(value, default=str))
    if _names_url(loc) and _may_hold_credentials(shown):
        return " (the value is not shown: it may hold credentials)"
    return f" (got {shown})"


def _names_url(loc: tuple[str, ...]) -> bool:
    """Whether ``loc`` points at a URL: its last named part, past any list positions (``urls.1``)."""
    named = [part for part in loc if not part.isdigit()]
    return bool(named) and "url" in named[-1]


# Errors for a value given where a whole section (a model) belongs.
_SECTION_ERRORS = frozenset({"model_type", "model_attributes_type", "dict_type", "dataclass_type"})


def _may_hold_credentials(url: str) -> bool:
    """``scheme://user:password`` with the host forgotten: the password then reads as a port, and no ``@`` tells
    :func:`hide_url_credentials` it is one."""
    authority = url.strip('"').split("://", 1)[-1].split("/", 1)[0]
    _, colon, port = authority.rpartition(":")
    return bool(colon) and not port.isdigit() and "@" not in authority


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's message without its snippet of the file, which quotes the offending line (a password, say)."""
    if not isinstance(error, yaml.MarkedYAMLError):
        return type(error).__name__
    parts = [part for part in (error.context, error.problem) if part]
    mark = error.problem_mark or error.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return (", ".join(parts) or "syntax error") + where


def masked(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, secrets shown as '**********', no credentials in URLs."""
    data: dict[str, Any] = _without_url_credentials(json.loads(settings.model_dump_json(exclude={"upstream_url"})))
    return data


def _without_url_credentials(value: Any) -> Any:
    if isinstance(value, str):
        return hide_url_credentials(value)
    if isinstance(value, dict):
        return {key: _without_url_credentials(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_url_credentials(item) for item in value]
    return value
