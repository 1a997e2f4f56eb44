"""What would stop a configured model from loading, found in seconds and said in one line.

``config check`` runs :func:`check_model` so a file that ``serve`` would refuse is refused before a deploy, and
:class:`~bridge.scoring.model.CrossEncoderModel` runs :func:`check_source` before ``from_pretrained``: a Hub
that cannot be reached otherwise costs ~48 s of doubled retry warnings (tokenizer, then model) before the
same failure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bridge.redact import hide_url_credentials  # a mirror's HF_ENDPOINT may carry user:token@
from bridge.scoring.settings import ModelSettings

# How long the one request that asks the Hub whether it can serve the model may take.
HUB_PROBE_TIMEOUT_S = 5.0

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


@dataclass(frozen=True)
class Finding:
    """One thing ``config check`` reports about a model: an error ``serve`` would refuse, or a warning."""

    where: str
    message: str
    error: bool = True


@dataclass(frozen=True)
class SourceCheck:
    """Whether ``source`` can be loaded: ``problem`` is the one line saying why not. ``local_files_only`` is
    set when the Hub cannot be reached but its files are cached: load them without asking the Hub again."""

    problem: str | None = None
    local_files_only: bool = False


def check_model(name: str, settings: ModelSettings, *, cpu_flags: set[str] | None = None) -> list[Finding]:
    """Everything about ``models.<name>`` that ``serve`` would refuse, plus warnings about slow choices.

    A remote model is scored elsewhere: its source, device and dtype are not this process's business, only
    what :func:`_remote_findings` checks. A bi-encoder's sentence-transformers pipeline (modules, pooling,
    similarity) is checked as ``serve`` reads it.
    """
    if settings.remote is not None:
        return _remote_findings(name, settings)
    from bridge.scoring.device import choose_placement

    findings: list[Finding] = []
    prefix = f"models.{name}"
    source = check_source(name, settings.source, settings.revision)
    if source.problem is not None:
        findings.append(Finding(f"{prefix}.source", source.problem))
    try:
        placement = choose_placement(settings.device, settings.dtype, settings.quantize, cpu_flags=cpu_flags)
    except ValueError as error:
        findings.append(Finding(f"{prefix}.device", str(error)))
    else:
        if settings.backend == "torch":
            findings.extend(
                Finding(f"{prefix}.dtype", warning, error=False) for warning in placement.warnings
            )
    backend = backend_problem(settings)
    if backend is not None:
        findings.append(Finding(f"{prefix}.backend", backend))
    elif settings.backend == "openvino":
        from bridge.scoring.backends.openvino_engine import choose_ov_precision
        from bridge.scoring.device import read_cpu_flags

        flags = read_cpu_flags() if cpu_flags is None else cpu_flags
        precision = choose_ov_precision(settings.dtype, flags)
        findings.extend(Finding(f"{prefix}.dtype", warning, error=False) for warning in precision.warnings)
    if settings.kind == "bi-encoder" and source.problem is None:
        problem = _pipeline_problem(settings.source, settings.revision)
        if problem is not None:
            findings.append(Finding(f"{prefix}.source", problem))
    return findings


def backend_problem(settings: ModelSettings) -> str | None:
    """Why ``settings.backend`` cannot run in this interpreter (its package is missing), or None.

    The combinations a backend refuses (openvino with int8, a bi-encoder, a GPU, remote) are refused by the
    settings themselves; this is what only the installed packages can tell.
    """
    if settings.backend != "openvino":
        return None
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        from bridge.scoring.backends.openvino_engine import INSTALL_HINT

        return f"backend openvino needs the openvino package, which is not installed: {INSTALL_HINT}"
    return None


def _remote_findings(name: str, settings: ModelSettings) -> list[Finding]:
    """What the remote scorer refuses at start (an activation or label no remote server gives), and a warning
    for an API key that would cross the network in clear text."""
    from bridge.scoring.base import ModelConfigError
    from bridge.scoring.remote_protocols import build_protocol

    prefix = f"models.{name}"
    findings: list[Finding] = []
    try:
        build_protocol(name, settings)
    except ModelConfigError as error:
        field = "label" if settings.label is not None else "activation"
        findings.append(Finding(f"{prefix}.{field}", str(error)))
    remote = settings.remote
    if remote is not None and remote.api_key is not None:
        for index, url in enumerate(remote.urls or [remote.url]):
            if url is not None and url.scheme == "http" and url.host not in ("127.0.0.1", "localhost", "::1"):
                where = f"{prefix}.remote.{'urls' if remote.urls is not None else 'url'}"
                where += f".{index}" if remote.urls is not None else ""
                findings.append(
                    Finding(where, f"the api_key is sent in clear text to {url.host} (http://); use https://", False)
                )
    return findings


def _pipeline_problem(source: str, revision: str | None) -> str | None:
    """What in a bi-encoder's sentence-transformers files the bridge would refuse (unsupported modules, pooling
    modes, similarity), read from the directory or the local Hub cache; files not there are not judged."""
    from bridge.scoring.base import ModelConfigError
    from bridge.scoring.st_modules import read_pipeline

    path = Path(source).expanduser()

    def read(filename: str) -> object:
        if path.is_dir():
            found: Path | None = path / filename
        else:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(source, filename, revision=revision)
            found = Path(cached) if isinstance(cached, str) else None
        if found is None or not found.is_file():
            return None
        try:
            return json.loads(found.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ModelConfigError(f"{filename} is not readable JSON ({error})") from None

    try:
        read_pipeline(read)
    except ModelConfigError as error:
        return str(error)
    return None


def check_source(name: str, source: str, revision: str | None = None) -> SourceCheck:
    """A local model directory that holds a model, or a Hub id that the Hub (or its local cache) can serve."""
    path = Path(source).expanduser()
    if path.is_dir():
        return SourceCheck(_directory_problem(path))
    if _looks_local(source) or path.exists():
        state = "is not a directory" if path.exists() else "does not exist"
        return SourceCheck(f"{source} {state}: give a local model directory or a Hugging Face Hub id")
    return _hub_check(name, source, revision)


def _looks_local(source: str) -> bool:
    """A path, not a Hub id (``org/name``: one slash, no leading dot, slash or tilde)."""
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source


def _directory_problem(path: Path) -> str | None:
    config = path / "config.json"
    if not config.is_file():
        return f"{path} is not a model directory (no config.json)"
    try:
        loaded = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return f"{config} is not readable JSON ({error})"
    if not isinstance(loaded, dict):
        return f"{config} does not hold a model configuration"
    names = {entry.name for entry in path.iterdir()}
    if not names.intersection(_WEIGHT_FILES) and not any(n.endswith(_WEIGHT_SUFFIXES) for n in names):
        return f"{path} holds no weights (model.safetensors or pytorch_model.bin)"
    if not names.intersection(_TOKENIZER_FILES):
        return f"{path} holds no tokenizer (tokenizer.json, vocab.txt, ...)"
    return None


def _hub_check(name: str, repo_id: str, revision: str | None) -> SourceCheck:
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HFValidationError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    advice = f"download it (hf download {repo_id} --local-dir DIR) and set models.{name}.source to DIR"
    try:
        cached = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except HFValidationError:
        return SourceCheck(f"{repo_id!r} is neither a local directory nor a Hugging Face Hub id (org/name)")
    is_cached = isinstance(cached, str)
    if constants.HF_HUB_OFFLINE:
        if is_cached:
            return SourceCheck(local_files_only=True)
        return SourceCheck(
            f"{repo_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: {advice}"
        )
    try:
        get_hf_file_metadata(
            hf_hub_url(repo_id, "config.json", revision=revision), timeout=HUB_PROBE_TIMEOUT_S
        )
    except (RepositoryNotFoundError, GatedRepoError) as error:
        kind = "is gated (accept its terms, log in)" if isinstance(error, GatedRepoError) else "was not found"
        return SourceCheck(
            f"{repo_id} {kind} on the Hugging Face Hub ({hide_url_credentials(constants.ENDPOINT)})"
        )
    except RevisionNotFoundError:
        return SourceCheck(f"{repo_id} has no revision {revision!r} on the Hugging Face Hub")
    except EntryNotFoundError:
        return SourceCheck(f"{repo_id} on the Hugging Face Hub has no config.json: not a model")
    except Exception as error:  # connection refused, DNS, timeouts, proxies, 5xx: the Hub is not usable now
        if is_cached:
            return SourceCheck(local_files_only=True)
        reason = hide_url_credentials(str(error).splitlines()[0]) if str(error) else type(error).__name__
        return SourceCheck(
            f"cannot reach the Hugging Face Hub at {hide_url_credentials(constants.ENDPOINT)} for {repo_id} ({reason}) "
            f"and it is not in the local cache: {advice}"
        )
    return SourceCheck()

