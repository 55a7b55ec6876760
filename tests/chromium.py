"""Debian's Chromium (/usr/bin/chromium, `make deps`) driven by Playwright from PyPI, for the
page's browser tests and bench/ui.py. No browser is downloaded (`playwright install` is never
run); the flags keep Chromium off the network: no background requests, updates or sync."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager

CHROMIUM = os.environ.get("OVSCTL_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = os.environ.get(
    "OVSCTL_TEST_ARTIFACTS",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts"),
)


@contextmanager
def browser(width: int = 1400, height: int = 900):
    """A headless Chromium with a fresh profile (removed afterwards); yields the Playwright
    BrowserContext."""
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"{CHROMIUM} is missing: Debian package chromium (`make deps`)")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="ovsctl-chromium-")
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=ARGS,
                viewport={"width": width, "height": height},
            )
            try:
                yield ctx
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def artifact(*parts: str) -> str:
    """A path under the test artifacts directory (tests/artifacts or $OVSCTL_TEST_ARTIFACTS,
    not committed), its directory created."""
    path = os.path.join(ARTIFACTS, *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path
