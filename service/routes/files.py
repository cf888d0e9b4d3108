"""The file-upload routes: OpenAI's audio API (`openai_api`) and the ChatServer seed's
`POST /transcribe` (`uploads`), over the app's one `Uploads` (which `WS /ws` recordings share),
so that all count against the same upload caps and share `DECODES_AT_ONCE` decoding threads.

It sits above both modules: `openai_api` builds on `uploads`, and this table joins them.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from service.routes.openai_api import openai_routes
from service.routes.uploads import Uploads


def upload_routes(uploads: Uploads) -> list[BaseRoute]:
    """The upload routes, over the app's `uploads` (its caps, decoders and limits)."""
    return [
        *openai_routes(uploads),
        Route("/transcribe", uploads.transcribe_seed, methods=["POST"]),
    ]
