"""The HTTP and WebSocket routes, one module per family: the native stream (`stream`), the
compatible dialects (`dialects`, `recordings`, `flux`, `realtime`), Twilio's call streams
(`twilio`), file uploads (`files`, `uploads`, `openai_api` with `openai_stream` and
`openai_models`), stored sessions (`sessions`) and following them live (`events`), the page
(`web`), API docs (`docs`, `openapi`) and `metrics`."""
