"""`actors.transcriber.files`: files of any length on the shared transcriber, cut by the live
segmenter.

The priority tests use `tests/support/fakes.py:FakeModel` (gated in its worker thread) under the
real transcriber actor; the others use real speech and, where said, the real tiny.en model."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import trio
import trio.testing
from support.dialect_helpers import DATA, overlap
from support.fakes import FakeModel

from actors.audio.file_decoder import UndecodableAudio, decode_file
from actors.model.port import DecodeOptions, Request, Samples, SpeechModel
from actors.transcriber.actor import TranscriberConfig, TranscriptionFailed, open_transcriber
from actors.transcriber.files import (
    FileOptions,
    FileTranscript,
    find_utterances,
    transcribe_file,
    transcribe_samples,
)

SENTENCES = {
    "weather.wav": "The weather today is sunny with a light breeze from the west.",
    "library.wav": "Please return the library books before Friday afternoon.",
    "garden.wav": "My grandmother planted tomatoes and roses in her garden.",
}


def _conversation(repeat: int = 1, gap_s: float = 2.5) -> tuple[Samples, list[str]]:
    """The project's espeak-ng clips one after another with pauses: a fresh-clone 'file'."""
    pieces: list[Samples] = []
    said: list[str] = []
    for _ in range(repeat):
        for name, sentence in SENTENCES.items():
            pieces += [decode_file(DATA / name), np.zeros(int(gap_s * 16000), np.float32)]
            said.append(sentence)
    return np.concatenate(pieces), said


def test_utterances_are_cut_at_the_pauses() -> None:
    audio, said = _conversation()
    spans = find_utterances(audio, FileOptions())
    assert len(spans) == len(said)
    assert all(0 <= start < end <= len(audio) for start, end in spans)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    assert find_utterances(np.zeros(16000 * 5, np.float32), FileOptions()) == []


async def test_a_long_upload_delays_a_live_final_by_one_small_batch_at_most() -> None:
    audio, _ = _conversation(repeat=4)  # twelve utterances
    model = FakeModel()
    config = TranscriberConfig(max_batch_size=8, background_batch_size=2)
    live = Request(np.zeros(16000, np.float32), DecodeOptions(prompt="live"))
    async with open_transcriber(model, config) as transcriber, trio.open_nursery() as nursery:
        model.gate.clear()
        results: list[object] = []

        async def upload() -> None:
            results.append(await transcribe_samples(transcriber, audio, FileOptions()))

        nursery.start_soon(upload)
        await trio.to_thread.run_sync(model.entered.wait)  # the first background batch runs
        nursery.start_soon(transcriber.transcribe, live)  # a live final arrives meanwhile
        await trio.testing.wait_all_tasks_blocked()
        model.gate.set()
    batches = model.batches
    assert len(batches[0]) <= config.background_batch_size
    assert [index for index, batch in enumerate(batches) if live in batch] == [1]
    assert len(model.seen) == 12 + 1
    [transcript] = results
    assert isinstance(transcript, FileTranscript) and len(transcript.segments) == 12


async def test_one_upload_keeps_at_most_in_flight_jobs_queued() -> None:
    audio, _ = _conversation(repeat=3)
    model = FakeModel()
    async with open_transcriber(model, TranscriberConfig()) as transcriber:
        model.gate.clear()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transcribe_samples, transcriber, audio, FileOptions(in_flight=3))
            await trio.to_thread.run_sync(model.entered.wait)
            await trio.testing.wait_all_tasks_blocked()
            stats = transcriber.statistics()
            assert stats.queue + stats.running <= 3
            model.gate.set()
    assert len(model.seen) == 9


async def test_segments_come_back_in_order_with_file_times() -> None:
    audio, said = _conversation(repeat=2)
    model = FakeModel()
    async with open_transcriber(model) as transcriber:
        progress: list[tuple[float, float]] = []
        transcript = await transcribe_samples(
            transcriber,
            audio,
            FileOptions(),
            progress=lambda done, total: progress.append((done, total)),
        )
    assert len(transcript.segments) == len(said)
    assert [segment.index for segment in transcript.segments] == list(range(len(said)))
    starts = [segment.start for segment in transcript.segments]
    assert starts == sorted(starts)
    for segment in transcript.segments:
        assert 0 <= segment.start < segment.end <= len(audio) / 16000
        assert segment.text == f"speech of {segment.end - segment.start:.1f} seconds"
    assert transcript.duration_s == round(len(audio) / 16000, 3)
    assert progress[-1] == (len(audio) / 16000, len(audio) / 16000)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)


async def test_a_model_error_fails_the_file() -> None:
    audio, _ = _conversation()
    model = FakeModel(fail=lambda request: True)
    async with open_transcriber(model) as transcriber:
        with pytest.raises(TranscriptionFailed):
            await transcribe_samples(transcriber, audio, FileOptions())


async def test_undecodable_bytes_never_reach_the_model() -> None:
    model = FakeModel()
    async with open_transcriber(model) as transcriber:
        with pytest.raises(UndecodableAudio) as caught:
            await transcribe_file(transcriber, b"plain text, not audio at all" * 4)
    assert caught.value.kind == "not_audio"
    assert model.batches == []


async def test_real_model_on_a_fresh_clone_file(tiny_model: SpeechModel, tmp_path: Path) -> None:
    audio, said = _conversation()
    path = tmp_path / "conversation.wav"
    from support.dialect_helpers import load_make_clips

    path.write_bytes(
        load_make_clips().encode_clip(
            audio[np.newaxis, :], 16000, container="wav", codec="pcm_s16le"
        )
    )
    async with open_transcriber(tiny_model) as transcriber:
        transcript = await transcribe_file(transcriber, path, FileOptions(words=True))
    assert len(transcript.segments) == len(said)
    for segment, sentence in zip(transcript.segments, said, strict=True):
        assert overlap(segment.text, sentence) >= 0.7
        assert segment.words
        assert all(
            segment.start - 0.01 <= w.start <= w.end <= segment.end + 0.01 for w in segment.words
        )
        assert not any(w.word in {".", ",", "!", "?"} for w in segment.words)
    assert transcript.language == "en"
