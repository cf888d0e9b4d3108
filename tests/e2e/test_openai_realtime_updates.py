"""OpenAI Realtime transcription settings that act on a running session, with the official
`openai` SDK against a real server with tiny.en (`support.realtime_client`: every event
validated with the SDK's own model, no field missing).

* `keywords` sent with `session.update` mid-stream are the session's key terms from the next
  turn on: LJ001-0031 names "Sweynheim", "Pannartz" and "Subiaco", which tiny.en spells
  wrong without help and right with them as key terms (tests/e2e/test_keyterms.py); a
  keyword the session refuses is an `error` naming the param, and the names stay.
* server VAD's `idle_timeout_ms`: silence that long is `input_audio_buffer.timeout_triggered`,
  then the silent item's `committed` and (empty) `completed`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr
import trio
from support.dialect_helpers import serving, speech
from support.realtime_client import COMPLETED, appends, pcm16, run_realtime

from actors.audio.file_decoder import decode_file
from actors.model.port import SpeechModel

# openai 3.54's sync Realtime client opens websockets 17's connection without its context
# manager, which websockets deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")
NAMES = ("Sweynheim", "Pannartz", "Subiaco")
BEFORE = "ljspeech_coqui/LJ001-0002.wav"  # a turn before the vocabulary changes
RARE = "ljspeech_coqui/LJ001-0031.wav"
CHUNK_24K = 4800  # 100 ms of 24 kHz PCM16
STOPPED = "input_audio_buffer.speech_stopped"


def _update(**input_audio: Any) -> dict[str, Any]:
    return {
        "type": "session.update",
        "session": {"type": "transcription", "audio": {"input": input_audio}},
    }


def _samples(name: str) -> np.ndarray[Any, Any]:
    samples: np.ndarray[Any, Any] = soxr.resample(decode_file(speech(name)), 16000, 24000)
    return samples


def _silence(seconds: float) -> np.ndarray[Any, Any]:
    return np.zeros(int(seconds * 24000), np.float32)


def _heard_until(end_ms: float) -> Any:
    """Until the turn whose speech stops within a second of `end_ms` has completed."""

    def done(events: list[dict[str, Any]]) -> bool:
        last = {e["item_id"] for e in events if e["type"] == STOPPED and e["audio_end_ms"] > end_ms}
        return any(e["type"] == COMPLETED and e["item_id"] in last for e in events)

    return done


async def test_keywords_mid_stream_spell_the_next_turns_rare_names(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    before, rare = _samples(BEFORE), _samples(RARE)
    end_ms = (len(before) + len(rare)) / 24 + 1000
    outgoing = [
        *appends(pcm16(np.concatenate([before, _silence(1.0)])), CHUNK_24K, 0.02),
        _update(transcription={"keywords": list(NAMES)}),
        {**_update(transcription={"keywords": ["x" * 101]}), "event_id": "evt_long"},
        *appends(pcm16(np.concatenate([rare, _silence(1.0)])), CHUNK_24K, 0.02),
    ]
    async with serving(tiny_model, tmp_path) as address:
        received = await trio.to_thread.run_sync(
            lambda: run_realtime(address, outgoing, _heard_until(end_ms - 1000))
        )
    (updated,) = received.of("session.updated")
    assert updated["session"]["audio"]["input"]["transcription"]["keywords"] == list(NAMES)
    (error,) = received.of("error")
    assert error["error"]["code"] == "invalid_vocabulary"
    assert error["error"]["param"] == "session.audio.input.transcription.keywords"
    assert error["error"]["event_id"] == "evt_long"
    completed = received.of(COMPLETED)
    first, later = completed[0]["transcript"], " ".join(e["transcript"] for e in completed[1:])
    assert "comparatively" in first.lower()  # the turn before the update
    heard = {name for name in NAMES if re.search(rf"\b{name}\b", later, re.IGNORECASE)}
    assert len(heard) >= 2, later  # of 3 (any CPU); tiny.en spells none without them


async def test_idle_timeout_commits_the_silence(tiny_model: SpeechModel, tmp_path: Path) -> None:
    outgoing = [
        _update(turn_detection={"type": "server_vad", "idle_timeout_ms": 1000}),
        *appends(pcm16(_silence(1.5)), CHUNK_24K, 0.01),
    ]

    def timed_out(events: list[dict[str, Any]]) -> bool:
        return any(e["type"] == COMPLETED for e in events)

    async with serving(tiny_model, tmp_path) as address:
        received = await trio.to_thread.run_sync(lambda: run_realtime(address, outgoing, timed_out))
    kinds = received.kinds()
    assert kinds == [
        "session.created",
        "session.updated",
        "input_audio_buffer.timeout_triggered",
        "input_audio_buffer.committed",
        COMPLETED,
    ]
    triggered, committed, completed = received.events[2:]
    shown = received.events[1]["session"]["audio"]["input"]["turn_detection"]
    assert shown["idle_timeout_ms"] == 1000
    assert (triggered["audio_start_ms"], triggered["audio_end_ms"]) == (0, 1000)
    assert triggered["item_id"] == committed["item_id"] == completed["item_id"]
    assert committed["previous_item_id"] is None
    assert completed["transcript"] == "" and completed["usage"]["seconds"] == 1.0
