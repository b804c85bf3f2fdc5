"""A real headless Chromium driven by Selenium: Debian's ``chromium`` and ``chromium-driver``.

Both come from the system (``scripts/setup.sh`` installs them; ``SENTIENT_CHROMIUM`` and
``SENTIENT_CHROMEDRIVER`` name others); Selenium is given their paths, so it never looks for
or downloads a browser or a driver of its own.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

# Debian's packages first; a CI runner's preinstalled Google Chrome otherwise.
CHROMIUM = os.environ.get("SENTIENT_CHROMIUM") or shutil.which("chromium") or shutil.which("google-chrome")
CHROMEDRIVER = os.environ.get("SENTIENT_CHROMEDRIVER") or shutil.which("chromedriver")


def missing() -> str | None:
    """Why no browser can run here (None when both binaries are installed)."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "no chromium and chromedriver (scripts/setup.sh installs chromium and chromium-driver)"
    return None


@contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[webdriver.Chrome]:
    """A headless Chromium session, quit at the end; the page's console is kept for reading."""
    assert CHROMIUM is not None and CHROMEDRIVER is not None, missing()
    options = Options()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        # Tests run as root in CI: Chromium's sandbox refuses root.
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--no-first-run",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
