"""A session's vocabulary with fakes: the config's reaches every request, a `configure` frame
changes it mid-stream from the next utterance on and is answered once, a bad one is refused
and changes nothing."""

from __future__ import annotations

import numpy as np
import trio
from support.audio_files import DATA, load, pcm16
from support.fakes import FakeSocket, FakeTranscriber
from support.session_parts import native_session

from actors.model.port import Request
from protocol.native import (
    Config,
    Configure,
    Configured,
    Error,
    Final,
    ServerFrame,
    Stop,
    encoder,
    server_decoder,
)
from service.session.ports import StreamOptions
from service.session.supervisor import run_session

OPTIONS = StreamOptions(model="fake", final_beam_size=1)
PAUSE = np.zeros(16000, np.float32)


async def send_audio(socket: FakeSocket, name: str) -> None:
    data = pcm16(np.concatenate([load(DATA / name), PAUSE]))
    for offset in range(0, len(data), 3200):
        await socket.to_server.send(data[offset : offset + 3200])


async def until(socket: FakeSocket, frames: list[ServerFrame], kind: type) -> ServerFrame:
    """Read frames (kept in `frames`) until one of `kind` comes."""
    async for message in socket.from_server:
        frame = server_decoder.decode(message)
        frames.append(frame)
        if isinstance(frame, kind):
            return frame
    raise AssertionError(f"no {kind.__name__} before the close")


async def test_a_configure_holds_from_the_next_utterance_on() -> None:
    socket, transcriber = FakeSocket(), FakeTranscriber()
    frames: list[ServerFrame] = []
    config = Config(prompt="A weather report.", keyterms=["Chorus"])

    async def client() -> None:
        await send_audio(socket, "weather.wav")
        await until(socket, frames, Final)  # utterance 0 is decoded: now change the words
        for change in (
            Configure(keyterms=["x" * 60] * 20),  # refused (too long together): no change
            Configure(keyterms=["Sweynheim", "Subiaco"]),  # the prompt stays
        ):
            await socket.to_server.send(encoder.encode(change).decode())
        await until(socket, frames, Configured)
        await send_audio(socket, "library.wav")
        await socket.to_server.send(encoder.encode(Stop()).decode())
        frames.extend([server_decoder.decode(message) async for message in socket.from_server])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        await run_session(native_session(socket, transcriber, OPTIONS, config=config))
    answers = [frame for frame in frames if isinstance(frame, Configured | Error)]
    assert [type(answer).__name__ for answer in answers] == ["Error", "Configured"]
    assert isinstance(answers[0], Error) and answers[0].code == "invalid_vocabulary"
    assert answers[1] == Configured(
        seq=answers[1].seq, keyterms=["Sweynheim", "Subiaco"], prompt="A weather report."
    )
    prompts = {prompt_of(request) for request, _ in transcriber.calls}
    assert prompts == {
        "A weather report. Chorus.",
        "A weather report. Sweynheim, Subiaco.",
    }
    finals = [frame for frame in frames if isinstance(frame, Final)]
    assert len(finals) == 2
    last = [request for request, priority in transcriber.calls if priority == "final"][-1]
    assert prompt_of(last) == "A weather report. Sweynheim, Subiaco."


def prompt_of(request: Request) -> str | None:
    return request.options.prompt
