"""The browser harness itself: a missing Chromium is named with its package, and the one found really renders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.chromium import (
    INSTALL_HINT,
    WINDOW,
    ChromiumPaths,
    chromium,
    find_chromium,
    png_size,
    screenshot,
    wait_for,
)


def test_a_missing_browser_names_the_package_and_the_install_command(tmp_path: Path) -> None:
    not_executable = tmp_path / "chromium"
    not_executable.write_text("")
    reason = find_chromium(
        {"RERANK_BRIDGE_CHROMIUM": str(not_executable), "RERANK_BRIDGE_CHROMEDRIVER": str(tmp_path / "none")}
    )
    assert isinstance(reason, str)
    assert f"RERANK_BRIDGE_CHROMIUM={not_executable} is not an executable file" in reason
    assert f"RERANK_BRIDGE_CHROMEDRIVER={tmp_path / 'none'} is not an executable file" in reason
    assert reason.endswith(f"Install them with: {INSTALL_HINT}")


@pytest.mark.browser
def test_chromium_renders_a_local_page_at_laptop_size(browser: Any, tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text(
        "<!doctype html><title>t</title><p id=out></p>"
        "<script>document.getElementById('out').textContent = 'ran ' + (6 * 7)</script>",
        encoding="utf-8",
    )
    browser.get(page.as_uri())
    assert wait_for(browser, "#out").text == "ran 42"
    viewport = browser.execute_script("return [window.innerWidth, window.innerHeight]")
    # A 1366x768 window, as on a laptop: the page gets its full width and what the window's frame leaves of its
    # height; the screenshot is that viewport.
    assert viewport[0] == WINDOW[0] and 500 < viewport[1] <= WINDOW[1], viewport
    assert png_size(screenshot(browser, tmp_path / "shots", "harness")) == tuple(viewport)


@pytest.mark.browser
def test_selenium_manager_is_never_asked(
    chromium_paths: ChromiumPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Selenium Manager downloads browsers and drivers; pointed at nothing, any call to it would fail the start."""
    monkeypatch.setenv("SE_MANAGER_PATH", str(tmp_path / "no-selenium-manager"))
    with chromium(chromium_paths, tmp_path) as driver:
        driver.get("about:blank")
        assert driver.capabilities["browserName"] in ("chrome", "chromium")
    assert (tmp_path / "chromedriver.log").is_file()
