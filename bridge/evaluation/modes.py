"""``--combine``: the combination modes one eval run compares, each sent to the bridge as ``ext.rerank`` keys.

A spec is a comma-separated list of modes::

    replace                     the model's score replaces the engine's
    linear[:ALPHA[:NORM]]       alpha * norm(model) + (1 - alpha) * norm(engine); ALPHA in [0, 1] (0.5),
                                NORM min_max (default), z_score or none
    rrf[:K]                     reciprocal-rank fusion of the engine's and the model's ranks, K >= 1 (60)
    rule                        no combination keys sent: whatever the bridge's rule says

Every mode but ``rule`` names all its keys, so a running bridge's rule cannot change what a label means.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

NORMALIZATIONS = ("min_max", "z_score", "none")
DEFAULT_ALPHA = 0.5
DEFAULT_NORMALIZATION = "min_max"
DEFAULT_RANK_CONSTANT = 60
SYNTAX = "replace | linear[:ALPHA[:min_max|z_score|none]] | rrf[:K] | rule"


@dataclass(frozen=True)
class Mode:
    """One combination mode: its canonical label and the ``ext.rerank`` keys that request it."""

    label: str
    combine: str
    keys: Mapping[str, Any] = field(default_factory=dict)

    def body(self, base: Mapping[str, Any]) -> dict[str, Any]:
        """``base`` with this mode's keys added to its ``ext.rerank``: a template's other keys stay, and the
        mode's own win over the template's, so that the label says what was asked."""
        body = copy.deepcopy(dict(base))
        if not self.keys:
            return body
        ext = body.get("ext")
        if ext is None:
            ext = body["ext"] = {}
        if not isinstance(ext, dict):
            raise ValueError(f"--combine {self.label}: the --query-template body's 'ext' must be an object")
        rerank = ext.get("rerank")
        if rerank is None:
            rerank = ext["rerank"] = {}
        if not isinstance(rerank, dict):
            raise ValueError(
                f"--combine {self.label}: the --query-template body's 'ext.rerank' must be an object to take "
                "the mode's keys"
            )
        rerank.update(self.keys)
        return body

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "combine": self.combine, "ext_rerank": dict(self.keys)}


def parse_modes(spec: str) -> list[Mode]:
    """The modes of ``--combine``, in the order given; a ValueError names the bad part and the syntax."""
    parts = [part.strip() for part in spec.split(",")]
    if not any(parts):
        raise ValueError(f"--combine: name at least one mode ({SYNTAX})")
    modes: list[Mode] = []
    for part in parts:
        if not part:
            raise ValueError(f"--combine {spec!r}: empty mode between commas")
        mode = parse_mode(part)
        if any(mode.label == seen.label for seen in modes):
            raise ValueError(f"--combine: mode {mode.label} given twice")
        modes.append(mode)
    return modes


def parse_mode(text: str) -> Mode:
    """One ``--combine`` mode, with its defaults filled in so that its label is canonical."""
    name, *options = text.strip().lower().split(":")
    if name in ("replace", "rule"):
        if options:
            raise ValueError(f"--combine {text!r}: {name} takes no options")
        return Mode(name, name, {"combine": "replace"} if name == "replace" else {})
    if name == "linear":
        if len(options) > 2:
            raise ValueError(f"--combine {text!r}: linear takes ALPHA and a normalization at most")
        alpha = _alpha(options[0], text) if options and options[0] else DEFAULT_ALPHA
        normalization = options[1] if len(options) > 1 and options[1] else DEFAULT_NORMALIZATION
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"--combine {text!r}: normalization {normalization!r} is not one of {', '.join(NORMALIZATIONS)}"
            )
        keys = {"combine": "linear", "alpha": alpha, "normalization": normalization}
        return Mode(f"linear:{alpha:g}:{normalization}", "linear", keys)
    if name == "rrf":
        if len(options) > 1:
            raise ValueError(f"--combine {text!r}: rrf takes one option, K")
        k = _rank_constant(options[0], text) if options and options[0] else DEFAULT_RANK_CONSTANT
        return Mode(f"rrf:{k}", "rrf", {"combine": "rrf", "rank_constant": k})
    raise ValueError(f"--combine {text!r}: unknown mode {name!r} ({SYNTAX})")


def _alpha(value: str, text: str) -> float:
    try:
        alpha = float(value)
    except ValueError:
        raise ValueError(f"--combine {text!r}: ALPHA {value!r} is not a number") from None
    if not math.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"--combine {text!r}: ALPHA must be between 0 and 1")
    return alpha


def _rank_constant(value: str, text: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"--combine {text!r}: K must be a whole number of at least 1")
    return int(value)
