"""A Twilio call's tracks on one clock (`protocol/dialects/twilio.py` over
`service/session/multichannel.py`), with fakes and trio's virtual clock: Twilio sends no
outbound media while the agent is silent, yet the agent's channel neither idles out nor leaves
its last utterance open."""

from __future__ import annotations

import base64
import json

import trio
import trio.testing
from support.audio_files import DATA, g711_encode, load, telephone_band
from support.fakes import FakeSocket
from support.session_parts import RecordingHooks, fake_multichannel

from protocol.dialects.twilio import TwilioCodec
from protocol.multichannel import ChannelAudio
from protocol.native import Config
from service.session.admission import LiveSessions
from service.session.multichannel import Multichannel, run_multichannel
from service.session.ports import SessionHooks, SessionLimits, StreamOptions

OPTIONS = StreamOptions(pace=0, limits=SessionLimits(idle_timeout_s=1.0))
CHUNK = 160  # 20 ms of μ-law at 8 kHz


def call(socket: FakeSocket, hooks: SessionHooks, live: LiveSessions) -> Multichannel:
    config = Config(
        encoding="mulaw", sample_rate=8000, channels=2, multichannel=True, interim=False
    )
    return fake_multichannel(
        socket,
        hooks,
        live,
        codec=TwilioCodec(["inbound", "outbound"]),
        config=config,
        options=OPTIONS,
        interleaved=False,
        route="/v1/twilio",
    )


def media(track: str, at_ms: int, payload: bytes) -> str:
    details = {
        "track": track,
        "timestamp": str(at_ms),
        "payload": base64.b64encode(payload).decode(),
    }
    return json.dumps({"event": "media", "media": details})


def decoded(codec: TwilioCodec, message: str) -> list[ChannelAudio]:
    items = codec.decode(message)
    assert all(isinstance(item, ChannelAudio) for item in items)
    return [item for item in items if isinstance(item, ChannelAudio)]


async def test_a_silent_agent_neither_idles_out_nor_leaves_its_last_utterance_open(
    autojump_clock: trio.abc.Clock,
) -> None:
    socket, hooks, live = FakeSocket(), RecordingHooks(), LiveSessions()
    agent = g711_encode(telephone_band(load(DATA / "weather.wav", 8000), 8000), "mulaw")
    agent_from_ms, call_ms = 3000, 3000 + len(agent) // 8 + 3000

    async def twilio() -> None:
        for at_ms in range(0, call_ms, 20):  # real time on the virtual clock
            await socket.to_server.send(media("inbound", at_ms, b"\xff" * CHUNK))
            offset = (at_ms - agent_from_ms) * 8
            if 0 <= offset < len(agent):  # the agent: silent (no media) for 3 s, then speaks
                await socket.to_server.send(media("outbound", at_ms, agent[offset:][:CHUNK]))
            await trio.sleep(0.02)
        await trio.testing.wait_all_tasks_blocked()
        # 3 s after the agent's last media: its utterance has its final all the same
        assert "final 1" in hooks.events, hooks.events  # channel 1's first, stored at 1
        await socket.to_server.send(json.dumps({"event": "stop", "stop": {}}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_multichannel, call(socket, hooks, live))
        nursery.start_soon(twilio)
    assert hooks.events[-1].startswith("ended stop")
    assert not live


def test_every_started_track_is_padded_to_the_newest_timestamp() -> None:
    codec = TwilioCodec(["inbound", "outbound"])
    first = decoded(codec, media("inbound", 0, b"\x01" * CHUNK))
    assert [(audio.channel, len(audio.data)) for audio in first] == [(0, CHUNK)]
    later = decoded(codec, media("inbound", 1000, b"\x01" * CHUNK))
    # the outbound track (no media yet) is brought up to 1 s, the inbound one past its chunk
    assert [(audio.channel, len(audio.data)) for audio in later] == [(1, 8000), (0, 8000)]
    assert later[0].data == b"\xff" * 8000 and later[1].data[: 8000 - CHUNK] == b"\xff" * 7840
    [outbound] = decoded(codec, media("outbound", 1000, b"\x02" * CHUNK))
    assert outbound == ChannelAudio(1, b"\x02" * CHUNK)  # on time: nothing to pad
