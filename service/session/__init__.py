"""One WebSocket connection's pipeline (DESIGN §3), in the order the data flows: admitted and
served by `admission`, its config checked and settled by `config`, supervised by `supervisor`
(one nursery, one line per stage), whose stages are `reader` → `segmenting` → `transcribing`
(with `agreement` for committed partials) → `writer`, joined by bounded channels. The stages
share `state`; the rest of the server holds a session by its `handle` (`stop`, `statistics`).
`ports` holds the small protocols the stages depend on; `sockets` adapts Starlette's WebSocket
to them; `recorder` keeps a session in the store."""
