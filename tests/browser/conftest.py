"""Browser tests: Debian's Chromium (``/usr/bin/chromium``) driven by Playwright for Python.

Without the browser the tests skip with the reason, except when ``CI`` is set: there a
missing browser fails them. ``make browser`` (part of ``make install``) installs it as root
with apt-get.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# the stream-worker harness (real worker processes, topics, waiting with a deadline)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.exists():
        return (f"{CHROMIUM} not found: install Debian's Chromium (make browser, or "
                "apt-get install -y chromium as root)")
    return None


@pytest.fixture(scope="session", autouse=True)
def require_chromium() -> None:
    """Before any other fixture of these tests starts servers: skip, or fail in CI."""
    reason = missing_browser()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and the browser tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium; closed after the module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                      args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
