"""Fixtures for the browser tests: one headless Chromium per test, with a fresh profile under its tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.chromium import ChromiumPaths, browser_required, chromium, find_chromium


@pytest.fixture(scope="session")
def chromium_paths() -> ChromiumPaths:
    """Debian's Chromium and chromedriver; skipped (or, with RERANK_BRIDGE_REQUIRE_BROWSER=1, failed) when absent."""
    found = find_chromium()
    if isinstance(found, str):
        if browser_required():
            pytest.fail(f"RERANK_BRIDGE_REQUIRE_BROWSER is set but {found}")
        pytest.skip(found)
    return found


@pytest.fixture
def browser(chromium_paths: ChromiumPaths, tmp_path: Path) -> Iterator[Any]:
    with chromium(chromium_paths, tmp_path / "chromium") as driver:
        yield driver
