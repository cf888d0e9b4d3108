"""The HTTP and WebSocket routes, one module per family: the native stream (`stream`), the
compatible dialects (`dialects`, `recordings`), file uploads (`files`, `uploads`, `openai_api`
with `openai_stream` and `openai_models`), stored sessions (`sessions`), the page (`web`), API
docs (`docs`, `openapi`) and `metrics`."""
