"""Headless Chromium (Debian's, through its chromedriver) for the dashboard's browser tests, ``rig watch`` in its
own process, and polling until the page shows something."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
#: For a browser test module's ``pytestmark``: skipped, saying how to get them, where the two are missing.
needs_chromium = pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                    reason="Debian's chromium and chromium-driver are not installed (make setup)")


def wait_until(condition: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
    """Poll ``condition()`` until it is truthy; its value. Fails naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def headless_chromium():
    """A headless Chromium WebDriver that never goes online (selenium-manager looks nothing up)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must never look for a browser or driver online
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--window-size=1280,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def start_watch(session: Path) -> subprocess.Popen:
    """``rig watch SESSION --port 0`` in its own process; read its address with :func:`watch_address`."""
    return subprocess.Popen([sys.executable, "-m", "rig.cli", "watch", str(session), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def watch_address(viewer: subprocess.Popen, timeout_s: float = 90.0) -> str:
    """The page's address (with its ``#token=``) that ``rig watch`` printed first; fails with what it printed."""
    line = wait_until(lambda: viewer.stdout.readline(), "rig watch's address", timeout_s)
    assert "rig watch:" in line and "#token=" in line, line
    return line.split(" at ", 1)[1].strip()
