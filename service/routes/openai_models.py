"""The model names OpenAI's routes take: `GET /v1/models`, `GET /v1/models/{model}`, and the
check of a request's `model` field (`served`).

Chorus serves one model; applications send OpenAI's names (`whisper-1`, `gpt-4o-transcribe`,
…), so those are aliases of it (`Settings.model_aliases`, `CHORUS_MODEL_ALIASES`). An alias
that names another model (`name=served-model-name` where this server loads a different one) is
not served here: it is not listed, and a request for it is refused like any unknown name.
No state and no tasks: each request reads the runtime's settings and the loaded model's name.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from protocol.openai import Model, ModelAliases, ModelList, encoder, error_body
from service.runtime import Runtime


def served(model: str, aliases: ModelAliases) -> tuple[str, ...]:
    """The names that reach the served `model`: its own first, then its aliases in order."""
    names = dict.fromkeys((model, *(name for name, to in aliases if to in ("", model))))
    return tuple(names)


def _models(request: Request) -> list[Model]:
    runtime = Runtime.of(request)
    return [
        Model(id=name) for name in served(runtime.options.model, runtime.settings.model_aliases)
    ]


async def list_models(request: Request) -> Response:
    return Response(
        encoder.encode(ModelList(data=_models(request))), 200, media_type="application/json"
    )


async def get_model(request: Request) -> Response:
    name = request.path_params["model"]
    for model in _models(request):
        if model.id == name:
            return Response(encoder.encode(model), 200, media_type="application/json")
    body = error_body(f"The model '{name}' does not exist", param="model", code="model_not_found")
    return Response(body, 404, media_type="application/json")
