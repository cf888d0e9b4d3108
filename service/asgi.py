"""`service.asgi:app`: Chorus for an ASGI server's command line, the way the seeds ran theirs:

    hypercorn -k trio --bind 127.0.0.1:8000 service.asgi:app

Importing this module builds the app from the environment and `.env` (`Settings.from_env()`,
as `chorus serve` does) and nothing more: the model loads in the app's lifespan, in a worker
thread (`create_app()`'s `load_whisper`), so the import stays fast (tests import it) and
hypercorn is listening, with `/health` answering 503 `starting`, while the model loads. A model
that cannot be found fails the lifespan's start-up, so hypercorn exits. hypercorn owns the
process, its sockets and each connection's task; the lifespan owns the actors (see
`service.app`).

What `chorus serve` does besides, and how to have it here:
- it refuses a non-loopback `CHORUS_HOST` without API keys; so does this import (hypercorn's
  `--bind` is not visible to the app: beyond loopback, requests are still refused by the Host
  check unless `CHORUS_HOST` or `CHORUS_ALLOWED_HOSTS` names the address);
- its hypercorn settings (each route's largest WebSocket message, one queued message, pings,
  keep-alive, incomplete header and graceful timeouts) are `hypercorn_config` here, and this
  import installs the bounded WebSocket streams they rely on (`service.serving`):
  `hypercorn -k trio -c python:service.asgi.hypercorn_config service.asgi:app`;
- on SIGINT/SIGTERM it drains (`drain_sessions`: its HAProxy agent, when `CHORUS_AGENT_PORT`
  runs one, answers `drain`, and live sessions finish their finals) before the server stops;
  plain hypercorn closes them after its graceful timeout.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

from service.app import create_app
from service.cli import hypercorn_settings, refuse_open
from service.config import Settings
from service.runtime import setup
from service.serving import install

settings = Settings.from_env()
if (refusal := refuse_open(settings)) is not None:
    raise RuntimeError(f"chorus: {refusal}")
logging.basicConfig(
    level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
)
app = create_app(settings)
install()  # hypercorn's WebSocket streams, bounded (`service.serving`): this process serves

# `chorus serve`'s hypercorn settings, for `-c python:service.asgi.hypercorn_config`
hypercorn_config = SimpleNamespace(**hypercorn_settings(settings, setup(app).security.limits))
