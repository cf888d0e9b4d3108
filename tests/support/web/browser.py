"""Headless Chromium for the web page tests, driven by Playwright's sync API.

Playwright's sync API runs its own event loop, so the tests drive it from a worker thread
(`trio.to_thread.run_sync`) while the server under test runs on trio in the main thread. Each
browser session starts and ends inside that one thread call (`open_page`).

The browser is Debian's `chromium` package (`/usr/bin/chromium`, or `CHORUS_CHROMIUM`); tests
skip when it is missing. Its fake microphone plays a WAV file in a loop.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Page, ViewportSize, sync_playwright

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "tests" / "data"
SPEECH_CLIP = DATA / "call_me_back.wav"  # made by tests/support/web/make_speech_clip.py
ARTIFACTS = ROOT / "test-artifacts"

DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}


def chromium_path() -> Path:
    path = Path(os.environ.get("CHORUS_CHROMIUM", "/usr/bin/chromium"))
    if not path.is_file():
        reason = f"Chromium not found at {path} (apt-get install chromium, or CHORUS_CHROMIUM)"
        if os.environ.get("CHORUS_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def chromium_args(fake_audio: Path | None) -> list[str]:
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
    ]
    if fake_audio is not None:
        args.append(f"--use-file-for-fake-audio-capture={fake_audio}")
    return args


@contextmanager
def open_page(
    base_url: str,
    *,
    fake_audio: Path | None = None,
    viewport: ViewportSize = DESKTOP,
    path: str | None = "/",
    init_script: str | None = None,
) -> Iterator[Page]:
    """A page at `base_url + path` (blank when `path` is None) in a fresh headless Chromium.

    `init_script` runs in the page before its own scripts. JavaScript errors fail the test.
    """
    executable = chromium_path()
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(executable), args=chromium_args(fake_audio)
        )
        try:
            context = browser.new_context(viewport=viewport, base_url=base_url)
            page = context.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.set_default_timeout(30_000)
            if init_script is not None:
                page.add_init_script(init_script)
            if path is not None:
                page.goto(path)
            yield page
            context.close()
        finally:
            browser.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def wait_ready(page: Page) -> None:
    """Waits until the page's script has set everything up (app.js marks <html data-ready>)."""
    page.wait_for_selector("html[data-ready='true']", state="attached")


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / name
    page.screenshot(path=str(target), full_page=True)
    return target
