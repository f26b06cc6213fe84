"""Debian's Chromium, driven through its chromedriver by Selenium 4, as the real browser the dashboard's tests and
benchmark use: headless, with a fresh profile of its own, nothing fetched in the background, and the browser's
console kept for the tests to read. The daemon under test is served over plain HTTP on loopback (the demo's
listener), so no certificate check is turned off."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

from peers import PeerMissing

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

# Debian's names first (packages chromium and chromium-driver), then the names other distributions use.
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-breakpad",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--password-store=basic",
         "--disable-dev-shm-usage")


def _which(names: tuple[str, ...]) -> str | None:
    return next((path for path in map(shutil.which, names) if path is not None), None)


def programs() -> tuple[str, str]:
    """The paths of the browser and of its driver; PeerMissing when either (or Selenium) is absent."""
    browser, driver = _which(BROWSERS), _which(DRIVERS)
    if browser is None or driver is None:
        raise PeerMissing("Chromium and its driver (Debian packages chromium and chromium-driver)")
    try:
        import selenium  # noqa: F401  (only whether it is there)
    except ImportError:
        raise PeerMissing("Selenium (the test extra: pip install -e '.[test]')") from None
    return browser, driver


@contextlib.contextmanager
def chromium(width: int = 1440, height: int = 900, timeout_s: float = 20.0) -> Iterator[WebDriver]:
    """A headless Chromium with a window of `width` x `height` CSS pixels and a fresh profile (removed after), its
    console messages of every level kept for `driver.get_log("browser")`; always quit on the way out."""
    browser, driver_path = programs()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="vg-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(executable_path=driver_path, log_output=f"{profile}/chromedriver.log")
        driver = webdriver.Chrome(options=options, service=service)
        try:
            driver.set_page_load_timeout(timeout_s)
            driver.set_script_timeout(timeout_s)
            set_viewport(driver, width, height)
            yield driver
        finally:
            driver.quit()


def set_viewport(driver: WebDriver, width: int, height: int) -> None:
    """The page's viewport (not the window, whose frame differs between headless modes) at `width` x `height`."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
