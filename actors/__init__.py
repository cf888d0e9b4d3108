"""Long-lived trio actors, each behind a handle: transcriber, store, limiter; and the sans-IO
audio pieces they and the sessions use (segmenter, decoders). The model adapter
(`actors.model.whisper`) is imported on its own, since it loads faster-whisper."""

from actors.audio.file_decoder import UndecodableAudio, decode_file, decode_file_async, probe_audio
from actors.audio.stream_decoder import StreamingDecoder
from actors.model.port import DecodeOptions, Request, Result, SpeechModel
from actors.model.weights import ModelNotFound, resolve_model
from actors.speech.segmenter import Segmenter, SegmenterConfig
from actors.transcriber.actor import (
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
