"""OpenAI Realtime's server VAD over the real session pipeline, with a gated transcriber: the
segmenter's cut is `speech_stopped` and `committed` before the utterance's final is decoded
(order, not time: the final waits at the gate until the client has seen both)."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import trio
import trio.testing
from support.audio_files import DATA, load, pcm16
from support.fakes import FakeSocket, FakeTranscriber
from support.realtime_client import COMPLETED, validated

from protocol.dialects.openai_realtime import RealtimeCodec
from service.session.ports import StreamOptions
from service.session.record import Session
from service.session.supervisor import run_session

OPTIONS = StreamOptions(model="fake", final_beam_size=1, speech_stopped=True)
STARTED, STOPPED = "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"
COMMITTED = "input_audio_buffer.committed"


def _appends() -> list[str]:
    """weather.wav and a second of silence, as 24 kHz PCM16 in 100 ms appends."""
    speech = np.concatenate([load(DATA / "weather.wav", rate=24000), np.zeros(24000, np.float32)])
    data = pcm16(speech)
    return [
        json.dumps(
            {
                "type": "input_audio_buffer.append",
                "audio": base64.b64encode(data[offset : offset + 4800]).decode(),
            }
        )
        for offset in range(0, len(data), 4800)
    ]


async def _until(socket: FakeSocket, seen: list[dict[str, Any]], kind: str) -> None:
    async for message in socket.from_server:
        seen.append(validated(message))
        if seen[-1]["type"] == kind:
            return
    raise AssertionError(f"no {kind} before the close: {[e['type'] for e in seen]}")


async def _final_waiting(transcriber: FakeTranscriber) -> None:
    """Until a final's request waits at the gate and every task is blocked."""
    for _ in range(1000):
        await trio.testing.wait_all_tasks_blocked()
        if any(priority == "final" for _, priority in transcriber.calls):
            return
    raise AssertionError("no final was asked for")


async def test_speech_stopped_and_committed_come_before_the_final_is_decoded() -> None:
    socket, transcriber = FakeSocket(), FakeTranscriber()
    transcriber.gate = trio.Event()  # nothing is decoded until the test says
    codec = RealtimeCodec("fake", prefix="t")
    session = Session(
        socket=socket, codec=codec, transcriber=transcriber, config=codec.config, options=OPTIONS
    )
    seen: list[dict[str, Any]] = []

    async def client() -> None:
        for append in _appends():
            await socket.to_server.send(append)
        await _final_waiting(transcriber)  # the final is asked for, and waits at the gate
        while True:  # what the client has been sent meanwhile
            try:
                seen.append(validated(socket.from_server.receive_nowait()))
            except trio.WouldBlock:
                break
        kinds = [event["type"] for event in seen]
        assert STOPPED in kinds and COMMITTED in kinds and COMPLETED not in kinds, kinds
        transcriber.gate.set()
        await _until(socket, seen, COMPLETED)
        await socket.to_server.aclose()  # the client leaves: the session ends
        socket.gone.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        await run_session(session)
    kinds = [event["type"] for event in seen]
    assert kinds[0] == "session.created"
    assert [kinds.count(kind) for kind in (STARTED, STOPPED, COMMITTED, COMPLETED)] == [1] * 4
    order = [kinds.index(kind) for kind in (STARTED, STOPPED, COMMITTED, COMPLETED)]
    assert order == sorted(order), kinds
    stopped = seen[kinds.index(STOPPED)]
    assert 2000 < stopped["audio_end_ms"] < 5000  # the end of the clip's speech
    assert seen[-1]["transcript"].startswith("speech of")  # the fake's words
