"""Long-lived trio actors, each behind a handle: transcriber, store, limiter; and the sans-IO
audio pieces they and the sessions use (segmenter, decoders). The model adapter
(`actors.model`) is imported on its own, since it loads faster-whisper."""

from actors.decode import UndecodableAudio, decode_file, decode_file_async, probe_audio
from actors.decode_stream import StreamingDecoder
from actors.model_api import DecodeOptions, Request, Result, SpeechModel
from actors.model_files import ModelNotFound, resolve_model
from actors.segmenter import Segmenter, SegmenterConfig
from actors.transcriber import (
    TranscriberClosed,
    TranscriberConfig,
    TranscriberHandle,
    TranscriptionFailed,
    open_transcriber,
)

__all__ = [
    "DecodeOptions",
    "ModelNotFound",
    "Request",
    "Result",
    "Segmenter",
    "SegmenterConfig",
    "SpeechModel",
    "StreamingDecoder",
    "TranscriberClosed",
    "TranscriberConfig",
    "TranscriberHandle",
    "TranscriptionFailed",
    "UndecodableAudio",
    "decode_file",
    "decode_file_async",
    "open_transcriber",
    "probe_audio",
    "resolve_model",
]
