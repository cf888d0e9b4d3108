"""The real Chorus app for the browser tests (tiny.en model, store in a temporary folder)."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.routing import Match, Mount, Route

from actors.model.port import SpeechModel
from service.app import create_app
from service.config import Settings
from service.routes.web import web_routes


def serves_page(app: Starlette) -> bool:
    return any(isinstance(route, Route | Mount) and route.path == "/" for route in app.routes)


def chorus_app(model: SpeechModel, data_dir: Path) -> Starlette:
    """`create_app()` with the injected model; adds `web_routes()` if it does not serve `/` yet."""
    settings = Settings(model="tiny.en", data_dir=data_dir)
    app = create_app(settings, model=model)
    if not serves_page(app):
        app = create_app(settings, model=model, extra_routes=web_routes())
    return app


def require_route(app: Starlette, method: str, path: str) -> None:
    """Skips the test when `app` has no route for `method path` (the feature is not built yet).

    Call it from a sync fixture: pytest-trio drops the reason of a skip raised inside a test.
    """
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    if not any(route.matches(scope)[0] is Match.FULL for route in app.routes):
        pytest.skip(f"{method} {path} is not served yet (no route in create_app())")


# Installed before the page's scripts: records every text the live status line and the alert
# show, so a test can check messages that later ones replace.
RECORD_MESSAGES = """
window.__messages = [];
document.addEventListener("DOMContentLoaded", () => {
  for (const id of ["live-state", "live-alert"]) {
    const target = document.getElementById(id);
    new MutationObserver(() => window.__messages.push(target.textContent.trim()))
      .observe(target, { childList: true, characterData: true, subtree: true });
  }
});
"""

# Makes getUserMedia fail the way a refused permission prompt does.
REFUSE_MICROPHONE = """
navigator.mediaDevices.getUserMedia = async () => {
  throw new DOMException("Permission denied", "NotAllowedError");
};
"""
