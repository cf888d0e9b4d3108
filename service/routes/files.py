"""The file-upload routes: OpenAI's audio API (`openai_api`) and the ChatServer seed's
`POST /transcribe` (`uploads`), over one `Uploads`, so that both count against the same upload
caps and share `DECODES_AT_ONCE` decoding threads.

It sits above both modules: `openai_api` builds on `uploads`, and this table joins them.
"""

from __future__ import annotations

import trio
from starlette.routing import BaseRoute, Route

from service.policy.limits import Limits
from service.routes.openai_api import openai_routes
from service.routes.uploads import DECODES_AT_ONCE, Uploads


def upload_routes(limits: Limits) -> list[BaseRoute]:
    """The upload routes, under the app's `limits`."""
    uploads = Uploads(trio.CapacityLimiter(DECODES_AT_ONCE), limits)
    return [
        *openai_routes(uploads),
        Route("/transcribe", uploads.transcribe_seed, methods=["POST"]),
    ]
