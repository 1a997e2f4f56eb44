"""Choosing where a model runs and in which precision, with the reason logged for operators."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bridge.scoring.precision import Int8Scheme, choose_int8_scheme, precision_label

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class Placement:
    """Device and precision for one model.

    ``weights_dtype`` is what the parameters are stored in; ``autocast`` is set when operations run under
    torch's autocast. CPU bf16 uses both: bf16 weights (no per-call weight casts, half the memory traffic,
    measured ~10-15% faster than fp32 weights under autocast on this project's AMX machines) under bf16 autocast
    (ops that autocast keeps in fp32 stay there). Scores stay within ~0.01 of fp32. ``int8`` is the int8
    scheme when the Linear layers get dynamic quantisation (``quantize_int8`` then true).
    """

    device: torch.device
    weights_dtype: torch.dtype
    autocast: torch.dtype | None = None
    quantize_int8: bool = False
    reasons: tuple[str, ...] = field(default_factory=tuple)
    warnings: tuple[str, ...] = field(default_factory=tuple)
    int8: Int8Scheme | None = None

    @property
    def label(self) -> str:
        """The precision scores are computed in, as ``/_bridge/ready`` shows it."""
        autocast = None if self.autocast is None else str(self.autocast).removeprefix("torch.")
        weights = str(self.weights_dtype).removeprefix("torch.")
        return precision_label(weights, autocast, self.int8 if self.quantize_int8 else None)

    def float32(self, why: str) -> Placement:
        """The same device in plain float32 (the precision guard's fallback)."""
        return Placement(self.device, torch.float32, None, False, (*self.reasons, why))

    def describe(self) -> str:
        precision = str(self.weights_dtype).removeprefix("torch.") + " weights"
        if self.autocast is not None:
            precision += f", {str(self.autocast).removeprefix('torch.')} autocast"
        if self.quantize_int8:
            precision += ", int8 dynamic quantisation"
            if self.int8 is not None and self.int8.reduce_range:
                precision += " (reduce_range)"
        return f"{self.device} ({precision})"


def read_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags as ``/proc/cpuinfo`` spells them (``avx2``, ``avx512_vnni``, ``amx_int8`` ...).

    Elsewhere (macOS, Windows) the few that matter here, from torch's own CPU probes.
    """
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    found: set[str] = set()
    probes = {
        "amx_bf16": "_is_amx_tile_supported",
        "amx_int8": "_is_amx_tile_supported",
        "avx512_bf16": "_is_avx512_bf16_supported",
        "avx512_vnni": "_is_vnni_supported",
        "avx512f": "_is_avx512_supported",
        "avx2": "_is_avx2_supported",
    }
    for flag, probe_name in probes.items():
        probe = getattr(torch.cpu, probe_name, None)
        try:
            if probe is not None and probe():
                found.add(flag)
        except RuntimeError:
            continue
    return found


def cpu_bf16_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU features that make bf16 matmuls fast (AMX tiles or AVX512-BF16); empty when there are none."""
    return {flag for flag in _CPU_BF16_FLAGS if flag in read_cpu_flags(cpuinfo)}


def parse_device(device: str) -> torch.device:
    """A configured device string as torch takes it, on a device this process can use; else a ValueError
    naming the device, so ``config check`` and ``serve`` refuse it with the same line."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{device!r} is not a torch device (auto, cpu, cuda, cuda:N, mps, ...)") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{device!r}: torch sees no CUDA device here (use auto or cpu)")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"{device!r}: torch sees {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif parsed.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{device!r}: Apple MPS is not available here (use auto or cpu)")
    return parsed


def _auto_device() -> tuple[torch.device, str]:
    if torch.cuda.is_available():
        return torch.device("cuda"), f"device auto: CUDA is available ({torch.cuda.get_device_name(0)})"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps"), "device auto: no CUDA, Apple MPS is available"
    return torch.device("cpu"), "device auto: no CUDA or MPS, using the CPU"


def choose_placement(
    device: str = "auto",
    dtype: str = "auto",
    quantize: str = "none",
    *,
    cpu_flags: set[str] | None = None,
    int8_reduce_range: bool | None = None,
) -> Placement:
    """Resolve ``device``/``dtype``/``quantize`` settings into a :class:`Placement`.

    ``cpu_flags`` overrides CPU feature detection (for tests): the flags as ``/proc/cpuinfo`` lists them.
    ``int8_reduce_range`` overrides the int8 activation range the CPU family would get.
    """
    reasons: list[str] = []
    if device == "auto":
        dev, why = _auto_device()
        reasons.append(why)
    else:
        dev = parse_device(device)
        reasons.append(f"device {dev}: configured")

    if quantize == "int8" and dev.type != "cpu":
        raise ValueError(f"quantize: int8 is dynamic quantisation for the CPU; the device is {dev}")

    warnings: list[str] = []
    if dtype != "auto":
        wanted = _DTYPES[dtype]
        if dev.type == "cpu" and wanted != torch.float32 and quantize != "int8":
            reasons.append(f"dtype {dtype}: configured; {dtype} weights under {dtype} autocast on the CPU")
            if wanted == torch.bfloat16 and not _bf16(cpu_flags):
                warnings.append(
                    "bfloat16 on a CPU without AMX or AVX512-BF16 is emulated: about 5x slower than float32 "
                    "(5.3x measured on an AMD EPYC without AVX-512); use dtype auto or float32"
                )
            placement = Placement(dev, wanted, wanted, False, tuple(reasons), tuple(warnings))
        else:
            reasons.append(f"dtype {dtype}: configured")
            placement = Placement(dev, wanted, None, quantize == "int8", tuple(reasons))
    elif dev.type == "cuda":
        if torch.cuda.is_bf16_supported():
            reasons.append("dtype auto: bfloat16 weights, the GPU supports bf16")
            placement = Placement(dev, torch.bfloat16, None, False, tuple(reasons))
        else:
            reasons.append("dtype auto: float16 weights, the GPU has no bf16")
            placement = Placement(dev, torch.float16, None, False, tuple(reasons))
    elif dev.type == "mps":
        reasons.append("dtype auto: float16 weights on MPS")
        placement = Placement(dev, torch.float16, None, False, tuple(reasons))
    elif quantize == "int8":
        reasons.append("dtype auto: float32 weights under int8 dynamic quantisation")
        placement = Placement(dev, torch.float32, None, True, tuple(reasons))
    else:
        flags = _bf16(cpu_flags)
        if flags:
            reasons.append(
                f"dtype auto: bfloat16 (weights and autocast), the CPU has {', '.join(sorted(flags))}"
            )
            placement = Placement(dev, torch.bfloat16, torch.bfloat16, False, tuple(reasons))
        else:
            reasons.append("dtype auto: float32, the CPU has neither AMX nor AVX512-BF16")
            placement = Placement(dev, torch.float32, None, False, tuple(reasons))

    if placement.quantize_int8:
        scheme = choose_int8_scheme(
            read_cpu_flags() if cpu_flags is None else cpu_flags,
            torch.backends.quantized.supported_engines,
            int8_reduce_range,
        )
        reasons.append(f"quantize int8: Linear layers get dynamic int8 quantisation; {scheme.reason}")
        placement = Placement(
            dev, placement.weights_dtype, None, True, tuple(reasons), tuple(warnings), scheme
        )
    return placement


def _bf16(flags: set[str] | None) -> set[str]:
    """The bf16 flags among ``flags`` (detected when None)."""
    return cpu_bf16_flags() if flags is None else {flag for flag in _CPU_BF16_FLAGS if flag in flags}
