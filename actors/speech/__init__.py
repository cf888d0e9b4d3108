"""Where audio is cut: voice activity (`vad`, Silero) and the per-session ring buffer that turns
it into utterances, partials and finals (`segmenter`). Sans-IO; owned by a session's segmenter
stage or by a file transcription. Live sessions share one trio actor for the VAD (`vad_actor`),
which runs every session's frames through a batched copy of the model (`vad_batch`)."""
