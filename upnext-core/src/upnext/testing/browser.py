"""Driving the dashboard in a real headless Chromium (Playwright), failing on console errors.

Chromium is ``$UPNEXT_CHROMIUM`` or ``/usr/bin/chromium``; without it a test
skips, or fails under ``CI`` / ``UPNEXT_REQUIRE_SERVICES``. Needs
``playwright`` (``upnext-core[testing-browser]``), imported only when a page is opened.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from upnext.testing._environment import unavailable

if TYPE_CHECKING:
    from playwright.async_api import ConsoleMessage, Error, Page

__all__ = ["CHROMIUM_ARGS", "ConsoleErrors", "chromium_path", "open_page"]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    """Chromium's path; missing: skip, or fail under CI / UPNEXT_REQUIRE_SERVICES."""
    path = os.environ.get("UPNEXT_CHROMIUM", "/usr/bin/chromium")
    if not Path(path).exists():
        unavailable(f"no Chromium at {path}: apt-get install chromium (or set UPNEXT_CHROMIUM)")
    return path


class ConsoleErrors:
    """Every console error and uncaught exception of a page, for the test to check."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.allowed: list[str] = []

    def allow(self, fragment: str) -> None:
        """Accept console errors containing `fragment` (e.g. a status the test provokes)."""
        self.allowed.append(fragment)

    def on_console(self, message: ConsoleMessage) -> None:
        """Record `message` if it is an error."""
        if message.type == "error":
            self.errors.append(f"console: {message.text} at {message.location}")

    def on_page_error(self, error: Error) -> None:
        """Record an uncaught exception."""
        self.errors.append(f"pageerror: {error.message}")

    def check(self) -> None:
        """AssertionError listing the errors no `allow` accepted."""
        unexpected = [e for e in self.errors if not any(a in e for a in self.allowed)]
        assert not unexpected, "errors in the browser:\n" + "\n".join(unexpected)


@asynccontextmanager
async def open_page(
    width: int = 1280, height: int = 900
) -> AsyncIterator[tuple[Page, ConsoleErrors]]:
    """A fresh Chromium page and its error log; on a clean exit, no unexpected error."""
    from playwright.async_api import async_playwright

    chromium = chromium_path()
    errors = ConsoleErrors()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": width, "height": height})
            page.on("console", errors.on_console)
            page.on("pageerror", errors.on_page_error)
            yield page, errors
        finally:
            await browser.close()
    errors.check()
