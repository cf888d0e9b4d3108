"""A Whisper adapter with no model loaded: the real batching, window and retry logic of
`actors.model.whisper.WhisperAdapter`, for tests whose subclass replaces `_run_group` (the one
method that touches the model) with a fake decoder."""

from __future__ import annotations

from actors.model.whisper import WhisperAdapter


class ModelFreeAdapter(WhisperAdapter):
    """`WhisperAdapter`'s settings as a CPU load sets them, and no model."""

    def __init__(self) -> None:  # no model: a subclass replaces `_run_group`
        self.bucket_s = 5.0
        self.final_window = "double"
        self.tight_partials = True
        self.pad_to_longest = False
