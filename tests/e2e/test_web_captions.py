"""The web page's "Text behind speech" figure against a session that falls behind (issue 20).

The real app serves the page with a `FakeModel` the test holds (its gate): Chromium's fake
microphone keeps sending speech while every draft and final waits, so the session's captions
fall behind for real and its `status` frames say by how much, every second. The page must show
each frame's `caption_delay_s` as `N.N s`, say so once to a screen reader, and hide the figure
once the model is let go and the frames stop.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import trio
from playwright.sync_api import Page, WebSocket
from support.fakes import FakeModel
from support.web.browser import SPEECH_CLIP, open_page, wait_ready
from support.web.chorus import chorus_app
from support.web.server import serve_on_loopback

LATE_S = 2.0  # twice the default caption target: from here on `status` reports the captions

# Installed before the page's scripts: records the figure and whether it shows at each change,
# and what the page announces about it.
RECORD_FIGURE = """
window.__figure = [];
window.__announced = [];
document.addEventListener("DOMContentLoaded", () => {
  const item = document.getElementById("stat-captions-item");
  const figure = document.getElementById("stat-captions");
  const record = () => window.__figure.push({ text: figure.textContent, hidden: item.hidden });
  const changes = { attributes: true, childList: true, characterData: true, subtree: true };
  new MutationObserver(record).observe(item, changes);
  const note = document.getElementById("live-behind");
  new MutationObserver(() => window.__announced.push(note.textContent)).observe(note, changes);
});
"""

# The page has shown the figure of at least two status frames that report late captions.
SHOWN_LATE = """(late) => window.__figure.filter(
  (seen) => !seen.hidden && parseFloat(seen.text) >= late).length >= 2"""


def collapse(values: list[str]) -> list[str]:
    """`values` without repeats in a row."""
    return [value for k, value in enumerate(values) if k == 0 or values[k - 1] != value]


def hold_then_release(page: Page, model: FakeModel) -> dict[str, Any]:
    """Start with the model held until the page shows late captions twice, then let it go, wait
    for the figure to hide, and stop."""
    wait_ready(page)
    result: dict[str, Any] = {"before": page.is_hidden("#stat-captions-item")}
    model.gate.clear()
    try:
        page.click("#live-toggle")
        page.wait_for_function(SHOWN_LATE, arg=LATE_S, timeout=20_000)
        result["held"] = page.evaluate("() => window.__figure.length")
        result["label"] = page.text_content("#stat-captions-item dt")
    finally:
        model.gate.set()
    page.wait_for_selector("#stat-captions-item", state="hidden", timeout=15_000)
    result["lag_hidden"] = page.is_hidden("#stat-lag-item")
    page.click("#live-toggle")
    page.wait_for_selector("#live-transcript .marker:has-text('Stopped after')")
    result["figure"] = page.evaluate("() => window.__figure")
    result["announced"] = page.evaluate("() => window.__announced")
    result["finals"] = page.evaluate("() => window.chorus.live.finals.length")
    return result


async def test_the_page_shows_how_far_the_text_is_behind(tmp_path: Path) -> None:
    model = FakeModel()
    async with serve_on_loopback(chorus_app(model, tmp_path)) as base_url:

        def drive() -> dict[str, Any]:
            received: list[str] = []

            def watch(socket: WebSocket) -> None:
                socket.on(
                    "framereceived",
                    lambda payload: received.append(payload) if isinstance(payload, str) else None,
                )

            with open_page(base_url, fake_audio=SPEECH_CLIP, init_script=RECORD_FIGURE) as page:
                page.on("websocket", watch)
                result = hold_then_release(page, model)
            result["frames"] = [json.loads(text) for text in received]
            return result

        result = await trio.to_thread.run_sync(drive)

    statuses = [frame for frame in result["frames"] if frame["type"] == "status"]

    sent = [f"{status['caption_delay_s']:.1f} s" for status in statuses]
    figure = result["figure"]
    shown = [seen["text"] for seen in figure if not seen["hidden"]]
    assert result["before"] and result["label"] == "Text behind speech"
    assert len([s for s in statuses if s["caption_delay_s"] >= LATE_S]) >= 2
    assert collapse(shown) == collapse(sent)  # every frame's figure, in order, as sent
    assert all(re.fullmatch(r"\d+\.\d s", text) for text in shown), shown
    # Let go, the session caught up: one last frame says so, then the figure goes.
    assert statuses[-1]["caption_delay_s"] < LATE_S and statuses[-1]["lag_s"] <= 1.0
    assert figure[-1]["hidden"] and result["lag_hidden"]
    assert result["finals"] > 0
    assert result["announced"] == [
        f"Text is {shown[0].removesuffix(' s')} seconds behind the speech.",
        "The text has caught up with the speech.",
    ]
