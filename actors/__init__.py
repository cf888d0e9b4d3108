"""Long-lived trio actors, each behind a handle, and the sans-IO pieces they stand on, in the
order audio flows: `audio` (bytes → 16 kHz samples), `speech` (samples → utterances), `model`
(the speech model and its weights), `transcriber` (the shared model actor), `store` (sessions
and recordings); `limiter` counts recordings per client. Import each from its module."""
