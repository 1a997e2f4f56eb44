"""The OpenVINO backend: a cross-encoder converted once by OpenVINO's own converter, cached on disk, run on the CPU.

* **Export.** ``openvino.convert_model`` (OpenVINO's maintained PyTorch frontend; optimum-intel is not usable
  with the bridge's transformers 5) traces the float32 ``AutoModelForSequenceClassification`` on an example batch;
  batch and sequence dimensions are made dynamic, and ``openvino.save_model(..., compress_to_fp16=False)`` writes
  the IR (``save_model`` would otherwise store the weights in fp16, which moves scores). The IR is always float32:
  precision is a compile-time hint, so one export serves every ``dtype``.
* **Cache.** Under ``export_dir`` (default ``~/.cache/rerank-bridge/openvino``), one directory per
  :func:`export_key`: the model's ``config.json`` and weight files (name, size, mtime), the OpenVINO,
  transformers and torch versions (they decide the graph) and the input names. A changed model or upgrade makes a
  new key, so a stale export is never read; a directory whose manifest, weights size or IR does not check out is
  rebuilt. Exports are written to a temporary directory and renamed into place, so a crash leaves no half export.
* **Precision.** ``dtype`` becomes ``INFERENCE_PRECISION_HINT`` (:func:`choose_ov_precision`); float32 is set
  explicitly because OpenVINO's CPU plugin otherwise computes in bf16 on AMX/AVX512-BF16 CPUs. The precision in use
  is read back from the compiled model. The start-up precision guard compares a non-f32 model with the same IR
  compiled in f32: OpenVINO f32 matches torch float32 within 1e-5 (tests/scoring/test_backend_openvino.py), far
  inside the guard's 0.02, and it needs no torch weights in memory; the fallback is that f32 compile.
* **Threads.** One compiled model with ``NUM_STREAMS`` = the batcher's workers and ``workers x threads``
  inference threads; each worker thread has its own infer request, so the workers' batches run side by side as
  torch's workers do.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bridge.scoring.backends.pairs import PairScoring
from bridge.scoring.base import ModelConfigError
from bridge.scoring.collate import pad_arrays
from bridge.scoring.device import read_cpu_flags
from bridge.scoring.encoder import Encoded
from bridge.scoring.settings import ModelSettings

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install openvino (or pip install 'rerank-bridge[openvino]')"
# Bumped when what an export holds changes (conversion options, inputs), so older exports are not reused.
EXPORT_FORMAT = 1
MANIFEST = "manifest.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")
_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
_LABELS = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}
# Two pairs of different lengths: the example batch the converter traces (shapes are made dynamic after).
_EXAMPLE = ("an example query", ("a short passage", "a somewhat longer passage, so that one row is padded"))


def default_export_dir() -> Path:
    """``$XDG_CACHE_HOME/rerank-bridge/openvino``, else ``~/.cache/rerank-bridge/openvino``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rerank-bridge" / "openvino"


@dataclass(frozen=True)
class OvPrecision:
    """The ``INFERENCE_PRECISION_HINT`` a ``dtype`` asks OpenVINO's CPU plugin for, and why."""

    hint: str
    reason: str
    warnings: tuple[str, ...] = ()


def choose_ov_precision(dtype: str, cpu_flags: set[str]) -> OvPrecision:
    """``auto`` follows the torch backend's rule (bf16 where the CPU has AMX or AVX512-BF16, else f32); an
    explicit dtype is passed on, with a warning where the CPU plugin will not honour it."""
    bf16 = sorted(flag for flag in _BF16_FLAGS if flag in cpu_flags)
    if dtype == "float32":
        return OvPrecision(
            "f32",
            "dtype float32: configured (set explicitly: OpenVINO defaults to bf16 on AMX/AVX512-BF16 CPUs)",
        )
    if dtype == "bfloat16":
        if bf16:
            return OvPrecision("bf16", f"dtype bfloat16: configured; the CPU has {', '.join(bf16)}")
        return OvPrecision(
            "bf16",
            "dtype bfloat16: configured",
            ("the CPU has neither AMX nor AVX512-BF16: OpenVINO computes in float32 instead",),
        )
    if dtype == "float16":
        return OvPrecision(
            "f16",
            "dtype float16: configured",
            (
                "OpenVINO's CPU plugin computes float16 only on CPUs with AMX-FP16; elsewhere it uses its default",
            ),
        )
    if bf16:
        return OvPrecision("bf16", f"dtype auto: bfloat16, the CPU has {', '.join(bf16)}")
    return OvPrecision("f32", "dtype auto: float32, the CPU has neither AMX nor AVX512-BF16")


def precision_name(hint: Any) -> str:
    """``float32``/``bfloat16``/``float16`` for a compiled model's ``INFERENCE_PRECISION_HINT`` (an ov.Type)."""
    text = hint.to_string() if hasattr(hint, "to_string") else str(hint)
    return _LABELS.get(text, text)


# -- the export cache -----------------------------------------------------------------------------------------


def graph_files(directory: Path) -> list[tuple[str, int, int]]:
    """``(name, size, mtime_ns)`` of the files that decide the converted graph: ``config.json`` and the weights
    (the tokenizer runs in the bridge, not in the graph). Symlinks (a Hub snapshot's) are followed."""
    found = []
    for entry in sorted(directory.iterdir()):
        if entry.name == "config.json" or entry.name.endswith(_WEIGHT_SUFFIXES):
            stat = entry.stat()
            found.append((entry.name, stat.st_size, stat.st_mtime_ns))
    return found


def export_key(
    files: Sequence[tuple[str, int, int]], versions: Mapping[str, str], inputs: Sequence[str]
) -> str:
    """A short hash of everything an export depends on; a different key means a new export."""
    payload = {"format": EXPORT_FORMAT, "files": [list(f) for f in files], "versions": dict(versions)}
    payload["inputs"] = list(inputs)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def cache_problem(directory: Path, key: str) -> str | None:
    """Why an export directory cannot be used as it is (None: it can): missing, or a manifest that is not its own,
    or an IR whose weights file does not have the size the manifest recorded (a torn copy)."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        return "no export yet" if not directory.exists() else "no manifest"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return f"unreadable manifest ({error})"
    if not isinstance(manifest, dict) or manifest.get("key") != key:
        return "manifest of another export"
    for name in ("model.xml", "model.bin"):
        if not (directory / name).is_file():
            return f"{name} missing"
    if (directory / "model.bin").stat().st_size != manifest.get("bin_bytes"):
        return "model.bin has the wrong size"
    return None


@dataclass(frozen=True)
class ExportInfo:
    """Where the IR is, and whether this start converted it (``reused`` false) or found it cached."""

    path: Path
    reused: bool
    seconds: float
    why_built: str | None = None


def model_directory(settings: ModelSettings, local_files_only: bool) -> Path:
    """The local directory holding the model's files (a Hub id's snapshot in the local cache)."""
    path = Path(settings.source).expanduser()
    if path.is_dir():
        return path
    from transformers.utils import cached_file

    config = cached_file(
        settings.source, "config.json", revision=settings.revision, local_files_only=local_files_only
    )
    if config is None:
        raise ModelConfigError(f"{settings.source}: config.json not found")
    return Path(config).parent


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[-60:] or "model"


# -- the engine -----------------------------------------------------------------------------------------------


class OpenVinoCrossEncoder(PairScoring):
    """A cross-encoder run by OpenVINO on the CPU: the bridge's own tokenising and batching, OpenVINO's forward
    pass. Loading is synchronous (seconds; a first start also converts the model)."""

    backend = "openvino"

    def __init__(self, name: str, settings: ModelSettings) -> None:
        try:
            import openvino as ov
        except ImportError as error:
            raise ModelConfigError(
                f"model {name}: backend openvino needs the openvino package, which is not importable here "
                f"({error}): {INSTALL_HINT}"
            ) from None
        from transformers import AutoConfig, AutoTokenizer

        from bridge.scoring.preflight import check_source

        self.name = name
        self.settings = settings
        self._ov = ov
        source = check_source(name, settings.source, settings.revision)
        if source.problem is not None:
            raise ModelConfigError(f"model {name}: {source.problem}")
        self._pretrained: dict[str, Any] = {
            "revision": settings.revision,
            "trust_remote_code": settings.trust_remote_code,
            "local_files_only": source.local_files_only,
        }
        tokenizer = AutoTokenizer.from_pretrained(settings.source, **self._pretrained)
        config = AutoConfig.from_pretrained(settings.source, **self._pretrained)
        threads = self._set_up_pairs(
            tokenizer, config, local_files_only=source.local_files_only, on_cpu=True, log=log
        )
        self._precision = choose_ov_precision(settings.dtype, read_cpu_flags())
        for warning in self._precision.warnings:
            log.warning("model %s: %s", name, warning)

        self._core = ov.Core()
        self.export = self._export_or_reuse(model_directory(settings, source.local_files_only))
        self._ov_model = self._core.read_model(str(self.export.path / "model.xml"))
        self._input_names = [port.get_any_name() for port in self._ov_model.inputs]
        self._compiled = self._compile(self._precision.hint)
        self._local = threading.local()
        log.info(
            "model %s: %s; %s",
            name,
            self._precision.reason,
            threads.replace("torch threads", "OpenVINO threads"),
        )
        self._finish_loading(f"with {self.describe()}", log)

    # -- export, cache, compile ------------------------------------------------------------------------------

    def _export_or_reuse(self, model_dir: Path) -> ExportInfo:
        started = time.perf_counter()
        inputs = ["input_ids", "attention_mask", *(["token_type_ids"] if self.padding.token_types else [])]
        versions = {
            "openvino": str(self._ov.__version__),
            "transformers": _version("transformers"),
            "torch": str(torch.__version__),
        }
        key = export_key(graph_files(model_dir), versions, inputs)
        root = (
            Path(self.settings.export_dir).expanduser() if self.settings.export_dir else default_export_dir()
        )
        target = root / f"{_safe(model_dir.name)}-{key}"
        problem = cache_problem(target, key)
        if problem is None:
            try:
                self._core.read_model(str(target / "model.xml"))
            except Exception as error:  # a corrupt IR: rebuild it
                problem = (
                    f"unreadable IR ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
                )
        if problem is None:
            info = ExportInfo(target, True, time.perf_counter() - started)
            log.info("model %s: OpenVINO export reused from %s", self.name, target)
            return info
        if target.exists():
            log.warning(
                "model %s: OpenVINO export at %s is not usable (%s); converting again",
                self.name,
                target,
                problem,
            )
        root.mkdir(parents=True, exist_ok=True)
        self._convert(root, target, key, versions, inputs, replace=target.exists())
        seconds = time.perf_counter() - started
        log.info("model %s: converted to OpenVINO IR in %.1f s, cached at %s", self.name, seconds, target)
        return ExportInfo(target, False, seconds, problem)

    def _convert(
        self,
        root: Path,
        target: Path,
        key: str,
        versions: Mapping[str, str],
        inputs: Sequence[str],
        *,
        replace: bool,
    ) -> None:
        """Convert the float32 torch model and move the IR into ``target`` in one rename.

        ``replace``: ``target`` holds an unusable export, replaced whatever it holds now; otherwise an export that
        another process (same key) completed meanwhile is kept and this one dropped.
        """
        from transformers import AutoModelForSequenceClassification

        ov = self._ov
        model = AutoModelForSequenceClassification.from_pretrained(
            self.settings.source, dtype=torch.float32, **self._pretrained
        )
        model.eval()
        query, passages = _EXAMPLE
        arrays = pad_arrays(self.encode(query, list(passages)), self.padding)
        example = {name: torch.from_numpy(arrays[name]) for name in inputs}
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
            converted = ov.convert_model(model, example_input=example)
        converted.reshape({port.get_any_name(): ov.PartialShape([-1, -1]) for port in converted.inputs})
        missing = set(inputs) - {port.get_any_name() for port in converted.inputs}
        if missing:
            raise ModelConfigError(f"model {self.name}: the OpenVINO export lacks inputs {sorted(missing)}")
        scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=root))
        try:
            ov.save_model(converted, str(scratch / "model.xml"), compress_to_fp16=False)
            manifest = {
                "key": key,
                "source": self.settings.source,
                "versions": dict(versions),
                "inputs": list(inputs),
                "bin_bytes": (scratch / "model.bin").stat().st_size,
                "created": time.time(),
            }
            (scratch / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
            if not replace and cache_problem(target, key) is None:  # another process finished it meanwhile
                shutil.rmtree(scratch, ignore_errors=True)
                return
            if target.exists():
                shutil.rmtree(target)
            os.replace(scratch, target)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            if not replace and cache_problem(target, key) is None:  # another process finished it first
                return
            raise

    def _compile(self, hint: str) -> Any:
        config = {
            "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "THROUGHPUT" if self.workers > 1 else "LATENCY",
            "NUM_STREAMS": str(self.workers),
            "INFERENCE_NUM_THREADS": str(self.workers * self.threads),
        }
        return self._core.compile_model(self._ov_model, "CPU", config)

    @property
    def computes(self) -> str:
        """The precision the compiled model really runs in (``float32``, ``bfloat16`` ...)."""
        return precision_name(self._compiled.get_property("INFERENCE_PRECISION_HINT"))

    def describe(self) -> str:
        return (
            f"openvino {str(self._ov.__version__).split('-')[0]} on CPU ({self.computes}, {self.workers} streams x "
            f"{self.threads} threads)"
        )

    # -- the precision guard (bridge.scoring.precision.Checkable) ------------------------------------------

    def precision_label(self) -> str:
        return self.computes

    def use_float32(self) -> Callable[[bool], None]:
        """Score with the same IR compiled in f32 until ``finish(keep)`` (the precision guard's reference)."""
        configured = self._compiled
        self._compiled = self._compile("f32")

        def finish(keep_float32: bool) -> None:
            if not keep_float32:
                self._compiled = configured

        return finish

    # -- inference -------------------------------------------------------------------------------------

    def prepare_worker(self) -> None:
        """Per worker thread: its own infer request and, with ``warmup``, one tiny batch."""
        self._request()
        if self.settings.warmup:
            self.predict("warm-up", ["a short passage", "a slightly longer passage to warm up with"])

    def _request(self) -> Any:
        """This thread's infer request on the current compiled model (the guard may have swapped it)."""
        compiled = self._compiled
        held = getattr(self._local, "held", None)
        if held is None or held[0] is not compiled:
            held = (compiled, compiled.create_infer_request())
            self._local.held = held
        return held[1]

    def logits(self, batch: Sequence[Encoded]) -> torch.Tensor:
        """Raw logits ``[rows, labels]`` for one batch (float32)."""
        arrays = pad_arrays(batch, self.padding)
        result = self._request().infer({name: arrays[name] for name in self._input_names})
        return torch.from_numpy(np.array(result[0], dtype=np.float32))

    def close(self) -> None:
        """Drop the compiled model and the threads' requests."""
        self._compiled = None
        with contextlib.suppress(AttributeError):
            del self._local.held


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"
