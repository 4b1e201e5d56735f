"""Headless Chromium for the browser test: Debian's ``chromium`` driven by selenium through
Debian's ``chromedriver`` (nothing is downloaded; Selenium Manager is never asked)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tests.conftest import wait_for

SCREENSHOT_DIR = Path(__file__).resolve().parent.parent / "docs" / "screenshots"

# Flags that run as root in a container without a display or network (see ../shared/FACTS.md).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]


def find_chromium() -> tuple[str, str] | None:
    """Paths of a Chromium binary and its chromedriver, or None when either is missing."""
    browser = next(filter(None, (shutil.which(n) for n in ("chromium", "chromium-browser"))), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def start_chromium(browser: str, driver: str, *, width: int = 1280, height: int = 900) -> Any:
    """A headless Chromium session of the given window size."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    # Keep the console (CSP violations are logged there as SEVERE "Refused to ..." messages).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    session.set_page_load_timeout(60)
    return session


def wait_until(
    predicate: Callable[[], Any], *, timeout: float = 30, what: str = "condition"
) -> Any:
    """``wait_for`` at a browser's pace, saying what was awaited when it times out."""
    try:
        return wait_for(predicate, timeout=timeout, interval=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{what}: {exc}") from None


_IMAGES_STATE = """
const imgs = Array.from(document.querySelectorAll(arguments[0]));
imgs.forEach(i => { i.loading = 'eager'; });
return imgs.map(i => [i.complete, i.naturalWidth, i.currentSrc]);
"""


def loaded_images(browser: Any, selector: str, *, timeout: float = 30) -> list[tuple[int, str]]:
    """Wait until every ``<img>`` matching ``selector`` has finished loading (lazy ones are made
    eager first); returns ``(naturalWidth, src)`` of each: width 0 means a broken image."""

    def settled() -> tuple[list[Any]] | None:
        state = browser.execute_script(_IMAGES_STATE, selector)
        return (state,) if all(done for done, _, _ in state) else None

    (state,) = wait_until(settled, timeout=timeout, what=f"images {selector!r} to load")
    return [(width, src) for _, width, src in state]


def path_of(url: str) -> str:
    return urlparse(url).path


def horizontal_overflow(browser: Any, width: int, height: int = 844) -> int:
    """Pixels the current page overflows sideways at a phone-sized window (0 when responsive);
    restores the window size afterwards."""
    before = browser.get_window_size()
    browser.set_window_size(width, height)
    try:
        script = "return document.documentElement.scrollWidth - window.innerWidth"
        return int(browser.execute_script(script))
    finally:
        browser.set_window_size(before["width"], before["height"])


def save_screenshot(browser: Any, name: str, *, width: int | None = None) -> Path | None:
    """Save a full-page screenshot into docs/screenshots/ when ``IMGREC_SCREENSHOTS=1``
    (``width``: the window's width for this picture, e.g. for a wide admin table)."""
    if os.environ.get("IMGREC_SCREENSHOTS") != "1":
        return None
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    before = browser.get_window_size()
    width = width or before["width"]
    browser.set_window_size(width, 600)  # measure the page, not an earlier, taller window
    height = max(int(browser.execute_script("return document.documentElement.scrollHeight")), 600)
    browser.set_window_size(width, height)
    # The window's own frame takes some of its height: grow it until the viewport holds the page.
    viewport = int(browser.execute_script("return window.innerHeight"))
    if viewport < height:
        browser.set_window_size(width, 2 * height - viewport)
    loaded_images(browser, "img")
    target = SCREENSHOT_DIR / name
    browser.save_screenshot(str(target))
    browser.set_window_size(before["width"], before["height"])
    return target


class ConsoleWatch:
    """Collects the browser console across page loads (chromedriver hands each message out once)
    and picks out Content-Security-Policy violations."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.messages: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        fresh = self.browser.get_log("browser")
        self.messages.extend(fresh)
        return fresh

    def csp_violations(self) -> list[str]:
        self.read()
        return [m["message"] for m in self.messages if "Content Security Policy" in m["message"]]

    def forget(self) -> None:
        self.read()
        self.messages.clear()


def provoke_csp_violation(browser: Any) -> None:
    """Set an inline style attribute, which a policy without 'unsafe-inline' styles refuses (and
    logs): proves that the page is under the policy and that violations reach the console."""
    browser.execute_script("document.body.setAttribute('style', 'outline: 1px solid red')")


_ROW = """
const items = Array.from(document.querySelectorAll(arguments[0]));
const list = items.length ? items[0].parentElement : null;
return {
  boxes: items.map(li => { const r = li.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; }),
  images: items.map(li => { const img = li.querySelector('img'); if (!img) return null;
    const r = img.getBoundingClientRect(); return [getComputedStyle(img).objectFit, r.width, r.height,
    img.naturalWidth, img.naturalHeight]; }),
  scroll: list ? [list.scrollWidth, list.clientWidth] : null,
};
"""


def shelf_layout(browser: Any, item_selector: str) -> dict[str, Any]:
    """Positions of a shelf's cards and its images' fit (for "one row, images undistorted")."""
    return browser.execute_script(_ROW, item_selector)
