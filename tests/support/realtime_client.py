"""The official `openai` SDK's Realtime client against a local server, for the Realtime tests.

`run_realtime` runs in a worker thread (the SDK's sync client): it opens
`client.realtime.connect(extra_query={"intent": "transcription"})` with the base URL pointed at
the server, sends the given events (a float in the list is a pause, in seconds), and reads
every event until `until` says the exchange is over. Each event is validated with the SDK's
own pydantic model for its type, and every field that model defines must be in the raw JSON
(`missing_fields`): the SDK itself validates nothing it parses.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numpy as np
from openai import OpenAI
from openai.types import realtime
from pydantic import BaseModel

MODELS: dict[str, type[BaseModel]] = {
    "session.created": realtime.SessionCreatedEvent,
    "session.updated": realtime.SessionUpdatedEvent,
    "input_audio_buffer.speech_started": realtime.InputAudioBufferSpeechStartedEvent,
    "input_audio_buffer.speech_stopped": realtime.InputAudioBufferSpeechStoppedEvent,
    "input_audio_buffer.timeout_triggered": realtime.InputAudioBufferTimeoutTriggered,
    "input_audio_buffer.committed": realtime.InputAudioBufferCommittedEvent,
    "input_audio_buffer.cleared": realtime.InputAudioBufferClearedEvent,
    "conversation.item.input_audio_transcription.delta": (
        realtime.ConversationItemInputAudioTranscriptionDeltaEvent
    ),
    "conversation.item.input_audio_transcription.completed": (
        realtime.ConversationItemInputAudioTranscriptionCompletedEvent
    ),
    "conversation.item.input_audio_transcription.failed": (
        realtime.ConversationItemInputAudioTranscriptionFailedEvent
    ),
    "error": realtime.RealtimeErrorEvent,
}
COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"


def missing_fields(model: BaseModel, raw: Any, path: str = "") -> list[str]:
    """The fields `model`'s class defines (recursively) that `raw` does not carry."""
    absent: list[str] = []
    for name, field in type(model).model_fields.items():
        key = field.alias or name
        if not isinstance(raw, dict) or key not in raw:
            absent.append(path + key)
            continue
        value = getattr(model, name)
        values = value if isinstance(value, list) else [value]
        raws = raw[key] if isinstance(value, list) else [raw[key]]
        for item, item_raw in zip(values, raws, strict=True):
            if isinstance(item, BaseModel):
                absent += missing_fields(item, item_raw, f"{path}{key}.")
    return absent


def validated(raw: str | bytes) -> dict[str, Any]:
    """The event as JSON, after checking it against the SDK's model with no field missing."""
    data: dict[str, Any] = json.loads(raw)
    model = MODELS[data["type"]].model_validate(data)
    assert not missing_fields(model, data), (data["type"], missing_fields(model, data))
    return data


@attrs.frozen
class Received:
    events: list[dict[str, Any]]
    close_code: int | None

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == kind]

    def kinds(self) -> list[str]:
        return [event["type"] for event in self.events]


Until = Callable[[list[dict[str, Any]]], bool]


def completions(count: int) -> Until:
    return lambda events: sum(e["type"] == COMPLETED for e in events) >= count


def run_realtime(
    address: str,
    outgoing: Sequence[dict[str, Any] | float],
    until: Until,
    *,
    limit_s: float = 60,
    api_key: str = "local-test",
) -> Received:
    """Send `outgoing` (dicts are client events, floats pauses) while reading events, until
    `until(events)` holds; then close. Runs in a worker thread."""
    client = OpenAI(api_key=api_key, base_url=f"http://{address}/v1")
    events: list[dict[str, Any]] = []
    done = threading.Event()
    close_code: list[int | None] = [None]
    with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:

        def read() -> None:
            from websockets.exceptions import ConnectionClosed

            try:
                while not done.is_set():
                    events.append(validated(connection.recv_bytes()))
                    if until(events):
                        done.set()
            except ConnectionClosed as closed:
                close_code[0] = closed.rcvd.code if closed.rcvd else None
                done.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        for item in outgoing:
            if isinstance(item, float):
                time.sleep(item)
            else:
                connection.send(item)  # type: ignore[arg-type]
        assert done.wait(limit_s), [e["type"] for e in events]
    reader.join(5)
    return Received(events, close_code[0])


def appends(audio: bytes, chunk_bytes: int, pause_s: float) -> list[dict[str, Any] | float]:
    """`input_audio_buffer.append` events of `chunk_bytes` each, `pause_s` apart."""
    out: list[dict[str, Any] | float] = []
    for offset in range(0, len(audio), chunk_bytes):
        piece = base64.b64encode(audio[offset : offset + chunk_bytes]).decode()
        out += [{"type": "input_audio_buffer.append", "audio": piece}, pause_s]
    return out


def pcm16(samples: np.ndarray[Any, Any]) -> bytes:
    return bytes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def mulaw(samples: np.ndarray[Any, Any]) -> bytes:
    """G.711 μ-law of float samples (the standard's segment encoding)."""
    value = (np.clip(samples, -1, 1) * 32635).astype(np.int32)
    sign = np.where(value < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(value), 32635) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return bytes((~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes())
