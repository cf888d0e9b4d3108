"""Where audio is cut: voice activity (`vad`, Silero) and the per-session ring buffer that turns
it into utterances, partials and finals (`segmenter`). Sans-IO; owned by a session's segmenter
stage or by a file transcription."""
