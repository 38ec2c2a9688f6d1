"""Headless Chromium for the console's screenshots and browser tests: Debian's
``chromium`` and ``chromedriver``, driven by Selenium, with nothing downloaded and no
connection attempted beyond loopback."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

__all__ = ["open_browser", "BrowserMissing", "CHROMIUM", "CHROMEDRIVER", "full_page_png"]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--password-store=basic", "--window-size=1280,900",
         "--force-device-scale-factor=1", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost")


class BrowserMissing(RuntimeError):
    """Chromium or its driver is not installed; the message says how to install them."""


def open_browser(*, chromium: str = CHROMIUM, chromedriver: str = CHROMEDRIVER):
    """A new headless Chromium session with its own empty profile (removed on ``quit``)."""
    missing = [p for p in (chromium, chromedriver) if not Path(p).exists()]
    if missing:
        raise BrowserMissing(f"{', '.join(missing)} not found: install Debian's browser with "
                             "`apt-get install -y chromium chromium-driver`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="medsyft-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS + (f"--user-data-dir={profile}",):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    except Exception:
        shutil.rmtree(profile, ignore_errors=True)
        raise
    quit_ = driver.quit

    def quit_and_clean():
        try:
            quit_()
        finally:
            shutil.rmtree(profile, ignore_errors=True)

    driver.quit = quit_and_clean
    return driver


def full_page_png(driver, path: Path) -> Path:
    """Screenshot of the whole page, not just the window."""
    height = driver.execute_script("return Math.min(document.documentElement.scrollHeight, 6000)")
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, max(int(height) + 140, 600))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    driver.set_window_size(width, 900)
    return path
