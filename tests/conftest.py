"""Shared fixtures: the real engine, a running bridge on 127.0.0.1, tiny models built on the fly."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.bridge_server import running_bridge  # noqa: F401  (re-exported for tests)

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def opensearch_url() -> Iterator[str]:
    """The real engine: OPENSEARCH_URL, else testcontainers, else scripts/opensearch.sh. At the end, whatever
    this run's tests left behind (indices named ``scratch_name(...)``) is removed; nothing else is touched."""
    from tests.engine import ensure_opensearch, remove_leftovers, stop_opensearch_if_started

    if os.environ.get("OPENSEARCH_URL"):
        url = os.environ["OPENSEARCH_URL"].rstrip("/")
        yield url
        remove_leftovers(url)
        return
    url = ensure_opensearch()
    os.environ["OPENSEARCH_URL"] = url
    yield url
    remove_leftovers(url)
    stop_opensearch_if_started()


@pytest.fixture
def no_bridge_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``BRIDGE_*`` variable from the shell running the tests: they would override the config under test."""
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is not present (shared test assets)")
    return SHARED


@pytest.fixture(scope="session")
def shared_model(shared_dir: Path) -> Path:
    path = shared_dir / "models" / "minilm-l6-ce-v1"
    if not (path / "config.json").is_file():
        pytest.skip(f"{path} is not present")
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight 1-label BERT cross-encoder: real plumbing, meaningless scores."""
    from tests.tiny_models import build_tiny_cross_encoder

    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-ce"), num_labels=1)


@pytest.fixture
async def http() -> AsyncIterator[object]:
    import aiohttp

    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session
