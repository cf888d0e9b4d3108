"""One WebSocket connection's pipeline (DESIGN §3): admitted and served by `admission`,
supervised by `supervisor` (one nursery, one line per stage), whose stages are the reader,
segmenter and writer (`stages`) and the transcriber client (`transcribing`, with `agreement` for
committed partials), joined by bounded channels. `ports` holds the small protocols the stages
depend on; `sockets` adapts Starlette's WebSocket to them; `recorder` keeps a session in the
store."""
