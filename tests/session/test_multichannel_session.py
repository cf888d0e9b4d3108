"""`run_multichannel` (`service/session/multichannel.py`) with fakes: one native pipeline per
channel behind one socket; each channel a live session of its own (a drain stops them all);
a client that leaves still has every final stored."""

from __future__ import annotations

import json

import numpy as np
import trio
import trio.testing
from support.audio_files import pcm16
from support.fakes import FakeSocket
from support.session_parts import RecordingHooks, fake_multichannel, speech_with_pauses

from protocol.codec import NativeCodec
from protocol.native import Config, Configured, Error, Final, Finalized, Ready, Stopped
from service.session.admission import LiveSessions
from service.session.multichannel import Multichannel, run_multichannel
from service.session.ports import SessionHooks, StreamOptions

OPTIONS = StreamOptions(pace=0)


def stereo(left: np.ndarray, right: np.ndarray) -> bytes:
    both = np.zeros((max(len(left), len(right)), 2), np.float32)
    both[: len(left), 0], both[: len(right), 1] = left, right
    return pcm16(both.reshape(-1))


def session(socket: FakeSocket, hooks: SessionHooks, live: LiveSessions) -> Multichannel:
    config = Config(channels=2, multichannel=True, interim=False)
    return fake_multichannel(
        socket, hooks, live, codec=NativeCodec(), config=config, options=OPTIONS
    )


async def test_each_channel_is_its_own_stream_and_the_session_ends_once() -> None:
    socket, hooks, live = FakeSocket(), RecordingHooks(), LiveSessions()
    audio = stereo(speech_with_pauses(), np.zeros(16000, np.float32))
    for offset in range(0, len(audio), 12800):
        socket.to_server.send_nowait(audio[offset : offset + 12800])
    socket.to_server.send_nowait(json.dumps({"type": "stop"}))
    await run_multichannel(session(socket, hooks, live))
    frames = await socket.frames()
    assert isinstance(frames[0], Ready) and frames[0].session_id == "call"
    assert isinstance(frames[-1], Stopped) and socket.closed_with == 1000
    finals = [frame for frame in frames if isinstance(frame, Final)]
    assert len(finals) == 2 and {final.channel for final in finals} == {0}  # right: silence
    assert frames[-1].utterances == 2 and frames[-1].transcript == "words words"
    # stored once, as the session: channel 0's utterances 0 and 1 at places 0 and 2
    assert hooks.events[0] == "started /v1/stream" and hooks.events[-1].startswith("ended stop")
    assert [event for event in hooks.events if event.startswith("final")] == ["final 0", "final 2"]
    assert not live


async def test_a_drain_stops_every_channel_and_a_leaving_client_loses_no_final() -> None:
    socket, hooks, live = FakeSocket(), RecordingHooks(), LiveSessions()
    audio = stereo(speech_with_pauses(), speech_with_pauses())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_multichannel, session(socket, hooks, live))
        for offset in range(0, len(audio), 12800):
            await socket.to_server.send(audio[offset : offset + 12800])
        await trio.testing.wait_all_tasks_blocked()  # every pause has ended its utterance
        assert len([event for event in hooks.events if event.startswith("final")]) == 4
        assert sorted(live) == ["call.0", "call.1"]  # each channel is a live session
        for handle in list(live.values()):
            handle.stop("server_shutdown", 1012)
    frames = await socket.frames()
    assert isinstance(frames[-1], Stopped) and socket.closed_with == 1012
    assert not live

    socket, hooks = FakeSocket(), RecordingHooks()
    talking = audio[: 2 * 2 * 32000]  # 2 s: both channels are mid-sentence
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_multichannel, session(socket, hooks, live))
        for offset in range(0, len(talking), 12800):
            await socket.to_server.send(talking[offset : offset + 12800])
        await trio.testing.wait_all_tasks_blocked()
        assert not [event for event in hooks.events if event.startswith("final")]
        await socket.to_server.aclose()  # the client leaves mid-sentence
    # each channel's open utterance still became a final in the store
    assert sorted(e for e in hooks.events if e.startswith("final")) == ["final 0", "final 1"]
    assert socket.closed_with is None  # nothing more was sent to a client that left
    assert not live


async def test_a_finalize_with_an_id_is_answered_once_after_every_targeted_channel() -> None:
    socket, hooks, live = FakeSocket(), RecordingHooks(), LiveSessions()
    talking = stereo(speech_with_pauses(), speech_with_pauses())[: 2 * 2 * 32000]
    for offset in range(0, len(talking), 12800):  # 2 s: both channels are mid-sentence
        socket.to_server.send_nowait(talking[offset : offset + 12800])
    for message in (
        {"type": "finalize", "channel": 1, "id": 7},
        {"type": "configure", "keyterms": ["Chorus"]},
        {"type": "finalize", "id": "all"},
        {"type": "finalize", "id": "all"},  # nothing left open: answered all the same
        {"type": "stop"},
    ):
        socket.to_server.send_nowait(json.dumps(message))
    await run_multichannel(session(socket, hooks, live))
    frames = await socket.frames()
    answers = [frame.id for frame in frames if isinstance(frame, Finalized)]
    assert answers == [7, "all", "all"]  # one each, never one per channel or a token
    [configured] = [frame for frame in frames if isinstance(frame, Configured)]
    assert configured.keyterms == ["Chorus"]
    finals = [(i, frame) for i, frame in enumerate(frames) if isinstance(frame, Final)]
    assert len(finals) == 2 and {final.channel for _, final in finals} == {0, 1}
    assert all(final.from_finalize for _, final in finals)
    right = next(i for i, final in finals if final.channel == 1)
    left = next(i for i, final in finals if final.channel == 0)
    first, second, _ = (i for i, frame in enumerate(frames) if isinstance(frame, Finalized))
    assert right < first and max(left, right) < second  # each after its channels' finals
    assert isinstance(frames[-1], Stopped) and socket.closed_with == 1000


async def test_a_channel_that_ends_while_the_others_go_on_is_told_to_the_client_once() -> None:
    socket, hooks, live = FakeSocket(), RecordingHooks(), LiveSessions()
    audio = stereo(speech_with_pauses(), speech_with_pauses())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_multichannel, session(socket, hooks, live))
        await socket.to_server.send(audio[:12800])
        await trio.testing.wait_all_tasks_blocked()
        live["call.1"].stop("server_shutdown", 1012)  # channel 1 alone ends
        await trio.testing.wait_all_tasks_blocked()
        for offset in range(12800, len(audio), 12800):  # channel 0 goes on
            await socket.to_server.send(audio[offset : offset + 12800])
        await socket.to_server.send(json.dumps({"type": "stop"}))
    frames = await socket.frames()
    errors = [frame for frame in frames if isinstance(frame, Error)]
    assert [(error.code, error.fatal) for error in errors] == [("channel_ended", False)]
    assert "channel 1" in errors[0].message
    assert {frame.channel for frame in frames if isinstance(frame, Final)} == {0}
    assert isinstance(frames[-1], Stopped)
