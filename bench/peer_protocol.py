"""WhisperLive's WebSocket messages, sans-IO: what its client sends first, its audio format,
and its answers decoded and turned into the native frames that `bench.figures` and
`bench.timeline` read.

No tasks and no sockets; `bench.peer` owns the connection and feeds each message it receives
to one `Transcript` per session. A segment's first message as `completed` becomes a `Final`,
the segment in progress (the last of a message) a `Partial`; `WAIT` marks a refusal, `ERROR` a
fatal `Error`. Segment times are kept as they come: audio seconds of the stream, which is what
caption delay needs (`CAPTION_SOURCE`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import msgspec
import numpy as np

from bench.audio import SAMPLE_RATE
from protocol.native import Error, Final, Partial, Ready, ServerFrame

END_OF_AUDIO = b"END_OF_AUDIO"
SERVER_READY = "SERVER_READY"
DISCONNECT = "DISCONNECT"
# WhisperLive's own client sends these unless told otherwise (whisper_live/client.py).
CLIENT_DEFAULTS: dict[str, Any] = {
    "task": "transcribe",
    "use_vad": True,
    "send_last_n_segments": 10,
    "no_speech_thresh": 0.45,
    "clip_audio": False,
    "same_output_threshold": 10,
}
# After the last chunk, the stream ends once committed text reaches this close to the end of
# the last utterance sent (segment ends and the energy gate's speech ends differ a little).
SETTLE_MARGIN_S = 1.0
# Its faster_whisper backend keeps every frame it is sent (its VAD only filters inside
# `transcribe`, and its segment times are offset by the audio already consumed), so a
# segment's times are audio seconds of the stream, as Chorus's are.
CAPTION_SOURCE = (
    "the `end` of WhisperLive's segments, in progress or completed (audio seconds of the stream)"
)


class Segment(msgspec.Struct):
    start: float | str = 0.0  # WhisperLive sends "%.3f" strings
    end: float | str = 0.0
    text: str = ""
    completed: bool = False

    @property
    def bounds(self) -> tuple[float, float]:
        return float(self.start), float(self.end)


class Message(msgspec.Struct):
    """Any message a WhisperLive server sends; what it does not say stays None."""

    uid: str | None = None
    message: str | float | None = None  # SERVER_READY, DISCONNECT; WAIT's minutes; ERROR's words
    status: str | None = None  # WAIT, ERROR, WARNING
    backend: str | None = None
    language: str | None = None
    segments: list[Segment] | None = None


message_decoder: msgspec.json.Decoder[Message] = msgspec.json.Decoder(Message)


def options_message(uid: str, language: str, model: str, config: Mapping[str, Any]) -> str:
    """The first message: WhisperLive's client defaults, then `config` over them."""
    options = {"uid": uid, "language": language, "model": model, **CLIENT_DEFAULTS, **config}
    return json.dumps(options)


def pcm16_to_float32(payload: bytes) -> bytes:
    """WhisperLive's default audio format: float32 samples in [-1, 1]."""
    samples = np.frombuffer(payload, dtype="<i2").astype(np.float32) / 32768.0
    return samples.tobytes()


@attrs.define
class Transcript:
    """WhisperLive's segment messages turned into native frames, one message at a time."""

    language: str = "en"
    committed: dict[tuple[float, float], int] = attrs.Factory(dict)
    committed_end: float = 0.0
    revision: int = 0
    pending: bool = False  # the last message held a segment in progress
    ready: bool = False
    wait: bool = False  # turned away (`status: WAIT`)
    error: str = ""
    warnings: list[str] = attrs.Factory(list)
    disconnected: bool = False

    def frames(self, message: Message) -> list[ServerFrame]:
        if message.status == "WAIT":
            self.wait = True
            return []
        if message.status == "ERROR":
            self.error = str(message.message)
            return [Error(code="whisperlive_error", message=self.error, fatal=True)]
        if message.status is not None:
            self.warnings.append(f"{message.status}: {message.message}")
            return []
        if message.message == SERVER_READY:
            self.ready = True
            return [
                Ready(
                    session_id=message.uid or "",
                    model=message.backend or "whisperlive",
                    sample_rate=SAMPLE_RATE,
                    language=self.language,
                )
            ]
        if message.message == DISCONNECT:
            self.disconnected = True
            return []
        if message.segments is None:
            return []  # language detection, or what this bench does not know
        return self._segments(message.segments)

    def _segments(self, segments: Sequence[Segment]) -> list[ServerFrame]:
        frames: list[ServerFrame] = []
        self.pending = False
        for index, segment in enumerate(segments):
            start, end = segment.bounds
            if segment.completed:
                if (start, end) in self.committed:
                    continue  # resent: the server repeats its last N segments every time
                self.committed[(start, end)] = len(self.committed)
                self.committed_end = max(self.committed_end, end)
                frames.append(
                    Final(
                        utterance=self.committed[(start, end)],
                        text=segment.text.strip(),
                        start=start,
                        end=end,
                        language=self.language,
                        confidence=0.0,
                    )
                )
            elif index == len(segments) - 1:
                self.pending = True
                self.revision += 1
                frames.append(
                    Partial(
                        utterance=len(self.committed),
                        revision=self.revision,
                        text=segment.text.strip(),
                        start=start,
                        end=end,
                    )
                )
        return frames

    def settled(self, speech_end: float) -> bool:
        """Nothing in progress, and committed text reaches the end of the speech sent."""
        return not self.pending and self.committed_end >= speech_end - SETTLE_MARGIN_S
