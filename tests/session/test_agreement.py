"""Committed partials (LocalAgreement-2): a committed word is never revised in a later partial;
drafts ask only for the words after it; the final is decoded afresh."""

from __future__ import annotations

import random

import numpy as np
import trio
from support.audio_files import DATA, load, pcm16
from support.fakes import FakeSocket, FakeTranscriber
from support.session_parts import native_session

from actors.model.port import SAMPLE_RATE, Request
from protocol.native import Final, Partial, encoder
from protocol.native import Stop as StopFrame
from service.session.agreement import Agreement
from service.session.ports import StreamOptions
from service.session.supervisor import run_session

SCRIPT = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "and",
    "then",
    "it",
    "runs",
    "far",
    "away",
]


def test_two_drafts_in_a_row_commit_what_they_share_but_not_the_last_word() -> None:
    agreement = Agreement()
    assert agreement.offer("the quick") == "the quick" and agreement.text == ""
    # "the" agreed; "quick" was the last word of this draft
    assert agreement.offer("the quick brow") == "the quick brow"
    assert agreement.text == "the quick"
    # the model changes its mind about a committed word: the committed one stands
    assert agreement.offer("a quick brown fox") == "the quick brown fox"
    assert agreement.text == "the quick"  # "brow" then "brown": no agreement yet
    assert agreement.offer("the quick brown fox jumps.") == "the quick brown fox jumps."
    assert agreement.text == "the quick brown fox"


def test_agreement_ignores_case_and_punctuation_and_keeps_the_newer_spelling() -> None:
    agreement = Agreement()
    agreement.offer("hello world how")
    agreement.offer("Hello, world how are")
    assert agreement.text == "Hello, world how"


class FickleModel:
    """A model that changes its mind: drafts honour the committed words only sometimes, so the
    session must hold them itself."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)

    def __call__(self, request: Request) -> str:
        count = max(1, int(len(request.audio) / SAMPLE_RATE * 2))
        words = [
            word.upper() if self.random.random() < 0.2 else word
            for word in SCRIPT[: min(count, len(SCRIPT))]
        ]
        honour = request.options.partial and self.random.random() < 0.7
        if request.options.committed and honour:
            committed = request.options.committed.split()
            words = [*committed, *words[len(committed) :]]
        return " ".join(words)


async def _session(transcriber: FakeTranscriber, options: StreamOptions) -> list[object]:
    socket = FakeSocket(size=4096)
    pause = np.zeros(SAMPLE_RATE, np.float32)
    audio = np.concatenate([pause, load(DATA / "garden.wav"), pause, load(DATA / "library.wav")])
    audio = np.concatenate([audio, pause])

    async def client() -> None:
        data = pcm16(audio)
        for offset in range(0, len(data), 3200):
            await socket.to_server.send(data[offset : offset + 3200])
            await trio.sleep(0.1)
        await socket.to_server.send(encoder.encode(StopFrame()).decode())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        await run_session(native_session(socket, transcriber, options))
    return list(await socket.frames())


async def test_a_committed_word_is_never_revised_in_a_later_partial(
    autojump_clock: trio.abc.Clock,
) -> None:
    transcriber = FakeTranscriber(FickleModel(seed=7))
    frames = await _session(transcriber, StreamOptions(model="fake", final_beam_size=1, pace=0))
    partials = [f for f in frames if isinstance(f, Partial)]
    finals = {f.utterance: f for f in frames if isinstance(f, Final)}
    assert len(finals) == 2
    assert any(p.committed > 0 for p in partials), "nothing was ever committed"
    for utterance, final in finals.items():
        mine = [p for p in partials if p.utterance == utterance]
        shown = ""
        for partial in mine:
            committed = partial.text[: partial.committed]
            assert committed.startswith(shown), (shown, partial.text)
            assert len(committed) >= len(shown)
            shown = committed
        assert final.text and shown
    # the final is decoded afresh, the committed words not forced on it
    assert not any(r.options.committed for r, priority in transcriber.calls if priority == "final")
    # drafts after the first ask only for the words past the committed ones
    assert any(r.options.committed for r, priority in transcriber.calls if priority != "final")


async def test_without_commitment_drafts_re_decode_everything(
    autojump_clock: trio.abc.Clock,
) -> None:
    transcriber = FakeTranscriber(FickleModel(seed=7))
    options = StreamOptions(model="fake", final_beam_size=1, pace=0, commit_partials=False)
    frames = await _session(transcriber, options)
    assert all(f.committed == 0 for f in frames if isinstance(f, Partial))
    assert not any(r.options.committed for r, _ in transcriber.calls)
