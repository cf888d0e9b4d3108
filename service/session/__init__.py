"""One WebSocket connection's pipeline (DESIGN §3), in the order the data flows: admitted and
served by `admission`, which builds the session's one record (`record.Session`), its config
checked and settled by `config`, supervised by `supervisor` (one nursery, one line per stage),
whose stages are `reader` (reading the client through the sans-IO `inbound`) → `segmenting` →
`transcribing` (with its drafts worker `drafting`, and `agreement` for committed partials) →
`writer`, joined by bounded channels whose items are in `messages`. The stages import none of
each other. Their live parts (`state`: meters and the session's end) have one owner each; the
rest of the server holds a session by its `handle` (`stop`, `statistics`). `ports` holds the
small protocols the stages depend on; `sockets` adapts Starlette's WebSocket to them;
`recorder` keeps a session in the store."""
