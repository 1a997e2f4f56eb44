"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by its ``chromedriver`` through Selenium 4.

Nothing is downloaded: the driver is given to ``Service(executable_path=...)``, so Selenium Manager (which would
fetch a browser or driver from the internet) never runs, and ``SE_OFFLINE`` keeps it offline should anything call
it. Chromium's own background traffic (component updates, sync, safe browsing, field trials) is switched off; the
pages under test live on 127.0.0.1 or on disk.

Where no Chromium or driver is installed, :func:`find_chromium` says which package is missing and how to install
it, and the tests skip with that reason, unless ``RERANK_BRIDGE_REQUIRE_BROWSER=1`` (CI, after installing them)
makes it a failure.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WINDOW = (1366, 768)  # a common laptop screen: the page must read well there
TIMEOUT_S = 30.0  # page loads, scripts and explicit waits: a stuck page fails within this, never hangs
INSTALL_HINT = "apt-get install chromium chromium-driver"
SCREENSHOT_DIR_ENV = "RERANK_BRIDGE_SCREENSHOT_DIR"
REQUIRE_ENV = "RERANK_BRIDGE_REQUIRE_BROWSER"

# Each candidate list: an explicit override first, then Debian's paths, then whatever PATH offers.
_BROWSER_ENV = "RERANK_BRIDGE_CHROMIUM"
_DRIVER_ENV = "RERANK_BRIDGE_CHROMEDRIVER"
_BROWSERS = ("/usr/bin/chromium", "/usr/lib/chromium/chromium", "chromium", "chromium-browser")
_DRIVERS = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver", "chromedriver")

# Flags that keep a headless Chromium quiet, local and deterministic.
_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
    "--force-device-scale-factor=1",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-extensions",
    "--disable-client-side-phishing-detection",
    "--disable-domain-reliability",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
    "--metrics-recording-only",
    "--password-store=basic",
    "--lang=en-US",
)


@dataclass(frozen=True)
class ChromiumPaths:
    browser: str
    driver: str


def _first_executable(override: str | None, candidates: tuple[str, ...]) -> str | None:
    for candidate in ((override,) if override else ()) + candidates:
        path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def find_chromium(environ: Mapping[str, str] | None = None) -> ChromiumPaths | str:
    """The browser and driver to use, or why there are none (naming the Debian package and the install command).

    ``RERANK_BRIDGE_CHROMIUM`` / ``RERANK_BRIDGE_CHROMEDRIVER`` point at other builds; a set override that is not
    an executable is reported rather than silently replaced by another one.
    """
    env = os.environ if environ is None else environ
    missing: list[str] = []
    found: dict[str, str] = {}
    for key, override_env, candidates, package in (
        ("browser", _BROWSER_ENV, _BROWSERS, "chromium"),
        ("driver", _DRIVER_ENV, _DRIVERS, "chromium-driver"),
    ):
        override = env.get(override_env) or None
        if override is not None:
            path = _first_executable(override, ())
            if path is None:
                missing.append(f"{override_env}={override} is not an executable file")
                continue
        else:
            path = _first_executable(None, candidates)
            if path is None:
                missing.append(f"no {key} found (Debian package '{package}'; looked for {', '.join(candidates)})")
                continue
        found[key] = path
    if missing:
        return "; ".join(missing) + f". Install them with: {INSTALL_HINT}"
    return ChromiumPaths(browser=found["browser"], driver=found["driver"])


def browser_required(environ: Mapping[str, str] | None = None) -> bool:
    """CI sets ``RERANK_BRIDGE_REQUIRE_BROWSER=1`` once it has installed Chromium: then a missing one fails."""
    env = os.environ if environ is None else environ
    return env.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes")


def chromium_options(paths: ChromiumPaths, profile: Path) -> Any:
    """Selenium options for :data:`_FLAGS` with a fresh profile in ``profile`` (nothing shared between tests)."""
    from selenium.webdriver.chrome.options import Options

    options = Options()
    options.binary_location = paths.browser
    for flag in _FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.page_load_strategy = "normal"
    # Browser console messages, so a test can fail on a page's script errors and show them.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return options


@contextmanager
def chromium(paths: ChromiumPaths, workdir: Path) -> Iterator[Any]:
    """A running headless Chromium (a Selenium ``WebDriver``), its profile and driver log under ``workdir``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager, if anything ever asks it, stays offline
    profile = workdir / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    # chromedriver listens on 127.0.0.1 only (its default); its log helps when a start fails in CI.
    service = Service(executable_path=paths.driver, log_output=str(workdir / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=chromium_options(paths, profile))
    try:
        driver.set_page_load_timeout(TIMEOUT_S)
        driver.set_script_timeout(TIMEOUT_S)
        driver.set_window_size(*WINDOW)
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, css: str, timeout_s: float = TIMEOUT_S) -> Any:
    """The first element matching ``css`` once it exists (TimeoutException naming the selector otherwise)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    return WebDriverWait(driver, timeout_s).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)),
        message=f"no element matches {css!r} after {timeout_s:.0f}s",
    )


def wait_for_attribute(
    driver: Any, css: str, attribute: str, values: tuple[str, ...], timeout_s: float = TIMEOUT_S
) -> str:
    """Wait until ``css``'s ``attribute`` is one of ``values``; return it (a timeout names what was seen last)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    seen: list[str | None] = [None]

    def settled(d: Any) -> str | bool:
        elements = d.find_elements(By.CSS_SELECTOR, css)
        seen[0] = elements[0].get_attribute(attribute) if elements else None
        return seen[0] if seen[0] in values else False

    try:
        return str(WebDriverWait(driver, timeout_s).until(settled))
    except TimeoutException as error:
        raise AssertionError(
            f"{css}[{attribute}] never became one of {values} within {timeout_s:.0f}s (last: {seen[0]!r}); "
            f"console: {console_errors(driver)}"
        ) from error


def console_errors(driver: Any) -> list[str]:
    """The page's SEVERE console messages so far (script errors, failed fetches)."""
    try:
        entries = driver.get_log("browser")
    except Exception:  # a driver without the log endpoint: nothing to report
        return []
    return [str(entry.get("message")) for entry in entries if entry.get("level") == "SEVERE"]


def screenshot(driver: Any, directory: Path, name: str, *, full_page: bool = False) -> Path:
    """Save ``name``.png under ``directory`` (and into ``$RERANK_BRIDGE_SCREENSHOT_DIR`` when set).

    ``full_page`` captures the whole document height at the window's width (Chromium's DevTools capture beyond
    the viewport); otherwise what a 1366x768 screen shows.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    if full_page:
        metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            },
        )
        path.write_bytes(base64.b64decode(shot["data"]))
    else:
        assert driver.save_screenshot(str(path)), f"Chromium could not save {path}"
    extra = os.environ.get(SCREENSHOT_DIR_ENV)
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, Path(extra) / path.name)
    return path


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (no imaging library needed)."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
