"""bench/remote.py: its helpers, and one tiny run against a real infinity (skipped where infinity cannot run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.remote import CRANFIELD, CROSS_ENCODER, load_requests, quantile, table

REPO = Path(__file__).resolve().parents[2]


def test_quantile_interpolates_like_numpy() -> None:
    numpy = pytest.importorskip("numpy")
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    for q in (0.0, 0.5, 0.95, 1.0):
        assert quantile(values, q) == pytest.approx(float(numpy.quantile(values, q)))
    assert quantile([], 0.5) != quantile([], 0.5)  # nan: nothing measured


def test_requests_never_repeat_a_pair_across_the_run() -> None:
    if not (CRANFIELD / "corpus.jsonl").is_file():
        pytest.skip(f"{CRANFIELD} is not present")
    first = load_requests(3, 20, 0)
    again = load_requests(3, 20, 0)
    later = load_requests(3, 20, 3)
    assert first == again, "deterministic"
    assert all(len(passages) == 20 and len(set(passages)) == 20 for _, passages in first + later)
    pairs = [(q, p) for q, passages in first + later for p in passages]
    assert len(pairs) == len(set(pairs)), "no score cache anywhere could answer a request"


def test_table_lists_every_size() -> None:
    row = {
        "passages": 100, "requests": 4, "max_abs_diff": 1e-7, "in_process_p50_ms": 900.0, "remote_p50_ms": 930.0,
        "added_p50_ms": 30.0, "hop_p50_ms": 4.5, "in_process_p95_ms": 950.0, "remote_p95_ms": 1000.0,
        "added_p95_ms": 50.0, "hop_p95_ms": 7.25,
    }  # fmt: skip
    report = {"cpu": "cpu", "cores": 2, "threads": 1, "rounds": 2, "seconds": 9.0, "sizes": [row]}
    lines = table(report).splitlines()
    assert len(lines) == 3 and lines[2].split()[:2] == ["100", "4"]
    expected = ["900.0ms", "930.0ms", "30.0ms", "4.5ms", "950.0ms", "1000.0ms", "50.0ms", "7.2ms"]
    assert lines[2].split()[2:10] == expected


@pytest.mark.slow
def test_a_tiny_run_prints_a_table_then_json() -> None:
    if not (CROSS_ENCODER / "config.json").is_file() or not (CRANFIELD / "corpus.jsonl").is_file():
        pytest.skip("the shared model or cranfield is not present")
    done = subprocess.run(
        [sys.executable, "bench/remote.py", "--sizes", "1,3", "--rounds", "2", "--per-round", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    last = json.loads(done.stdout.strip().splitlines()[-1])
    if done.returncode == 3:
        pytest.skip(f"infinity-emb cannot run here: {last['skipped']}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert last["bench"] == "remote" and last["rounds"] == 2
    assert [row["passages"] for row in last["sizes"]] == [1, 3]
    for row in last["sizes"]:
        assert row["requests"] == 2
        assert 0 < row["in_process_p50_ms"] <= row["in_process_p95_ms"]
        assert 0 < row["remote_p50_ms"] <= row["remote_p95_ms"]
        assert 0 < row["hop_p50_ms"] <= row["hop_p95_ms"]
        assert row["added_p50_ms"] == pytest.approx(row["remote_p50_ms"] - row["in_process_p50_ms"])
        assert row["max_abs_diff"] < 1e-3, "the same model through infinity scores the same"
    assert "remote hop on" in done.stdout
