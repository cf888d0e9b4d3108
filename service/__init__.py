"""The ASGI app and server: `create_app()` and its settings; `chorus` CLI in `service.cli`."""

from service.app import create_app
from service.config import Settings

__all__ = ["Settings", "create_app"]
