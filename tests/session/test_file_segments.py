"""`transcribe_file(..., segments=...)`: a file's segments leave in file order as soon as they
and those before them are transcribed, whatever order the utterances finish in."""

from __future__ import annotations

import numpy as np
import pytest
import trio
import trio.testing
from support.audio_files import load, wav_bytes
from support.dialect_helpers import speech

from actors.model.port import Priority, Request, Result
from actors.transcriber.files import FileSegment, FileTranscript, transcribe_file

CLIPS = (
    "ljspeech_coqui/LJ001-0002.wav",
    "librivox_pocketsphinx/sense_and_sensibility_01_austen_64kb-0880.wav",
    "librivox_pocketsphinx/sense_and_sensibility_01_austen_64kb-0930.wav",
)
TEXTS = ("one", "", "three")  # the second utterance transcribes to nothing: no segment


class HeldTranscriber:
    """Each call waits for its own release; `arrived` is set once every clip's call is in."""

    def __init__(self) -> None:
        self.releases: list[trio.Event] = []
        self.arrived = trio.Event()

    async def transcribe(
        self, request: Request, *, priority: Priority = "final", **_: object
    ) -> Result:
        index = len(self.releases)
        self.releases.append(trio.Event())
        if len(self.releases) == len(CLIPS):
            self.arrived.set()
        await self.releases[index].wait()
        return Result(text=TEXTS[index], language="en")


def _joined() -> bytes:
    gap = np.zeros(40000, dtype=np.float32)  # 2.5 s: over the 2 s pause that cuts a file
    pieces = [piece for clip in CLIPS for piece in (load(speech(clip)), gap)]
    return wav_bytes(np.concatenate(pieces[:-1]))


def _texts(receive: trio.MemoryReceiveChannel[FileSegment]) -> list[tuple[int, str]]:
    got: list[tuple[int, str]] = []
    while True:
        try:
            segment = receive.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return got
        got.append((segment.index, segment.text))


async def test_segments_leave_in_order_as_soon_as_they_can() -> None:
    transcriber = HeldTranscriber()
    send, receive = trio.open_memory_channel[FileSegment](8)
    transcripts: list[FileTranscript] = []

    async def run() -> None:
        transcripts.append(await transcribe_file(transcriber, _joined(), segments=send))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        with trio.fail_after(120):  # a guard against a hang (decoding and VAD run in threads)
            await transcriber.arrived.wait()
        transcriber.releases[2].set()  # the last finishes first: nothing may leave yet
        await trio.testing.wait_all_tasks_blocked()
        assert _texts(receive) == []
        transcriber.releases[0].set()  # the first: it leaves, and the second is still out
        await trio.testing.wait_all_tasks_blocked()
        assert _texts(receive) == [(0, "one")]
        transcriber.releases[1].set()  # the empty one: the third follows, numbered on
    assert _texts(receive) == [(1, "three")]
    with pytest.raises(trio.EndOfChannel):  # closed once the file is done
        receive.receive_nowait()
    assert [segment.text for segment in transcripts[0].segments] == ["one", "three"]
