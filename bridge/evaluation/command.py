"""``rerank-bridge eval`` (placeholder until the evaluation package lands)."""

from __future__ import annotations

import argparse
from typing import Any


def add_eval_parser(commands: Any) -> None:
    commands.add_parser("eval", help="relevance evaluation (not yet available)")


def run_eval(settings: Any, args: argparse.Namespace) -> int:
    raise SystemExit("rerank-bridge eval is not available yet")
