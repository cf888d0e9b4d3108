"""`POST /v1/audio/transcriptions` with `stream=true`, the model aliases and `/v1/models`, driven
by the official `openai` client (unmodified but for its base URL) against a real server on
loopback with tiny.en and real speech.

The client does not validate what it parses, so every event is checked here with the SDK's own
models: the raw SSE payloads (read with httpx) and the objects the client returns. That the
deltas come while the file is transcribed is shown by order, not time: a model that holds every
batch after its first until the test has seen a delta."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pydantic
import pytest
import trio
from openai.types import Model as SdkModel
from openai.types.audio import TranscriptionTextDeltaEvent, TranscriptionTextDoneEvent
from support.audio_files import load, wav_bytes
from support.dialect_helpers import DATA, overlap, reference, serving, speech

from actors.model.port import Request, Result, SpeechModel
from protocol.openai import DEFAULT_MODEL_ALIASES, parse_model_aliases

CLIPS = (
    "ljspeech_coqui/LJ001-0001.wav",
    "ljspeech_coqui/LJ001-0002.wav",
    "ljspeech_coqui/LJ001-0004.wav",
    "librivox_pocketsphinx/sense_and_sensibility_01_austen_64kb-0870.wav",
    "librivox_pocketsphinx/sense_and_sensibility_01_austen_64kb-0880.wav",
    "librivox_pocketsphinx/sense_and_sensibility_01_austen_64kb-0930.wav",
    "wenet/librispeech-1995-1837-0001.wav",
)
GAP_S = 2.5  # silence between the clips: over the 2 s pause that cuts a file's utterances
ALIASES = [name for name, _ in parse_model_aliases(DEFAULT_MODEL_ALIASES)]
NOT_AUDIO = ("notes.wav", b"these are not sounds " * 100)
LIBRARY = "Please return the library books before Friday afternoon."
EVENTS: dict[str, type[pydantic.BaseModel]] = {
    "transcript.text.delta": TranscriptionTextDeltaEvent,
    "transcript.text.done": TranscriptionTextDoneEvent,
}


@pytest.fixture(scope="module")
def long_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The clips joined, GAP_S of silence apart: about 50 s, one utterance per clip."""
    gap = np.zeros(int(GAP_S * 16000), dtype=np.float32)
    pieces = [piece for clip in CLIPS for piece in (load(speech(clip)), gap)]
    path = tmp_path_factory.mktemp("long") / "joined.wav"
    path.write_bytes(wav_bytes(np.concatenate(pieces[:-1])))
    return path


class HeldModel:
    """tiny.en; every batch after the first waits until the test has seen a delta (`seen`),
    and with `fail_after_first` fails instead. Counts the utterances it has transcribed."""

    def __init__(self, model: SpeechModel, *, fail_after_first: bool = False) -> None:
        self.model = model
        self.name, self.multilingual = model.name, model.multilingual
        self.languages, self.workers = model.languages, 1
        self.fail_after_first = fail_after_first
        self.seen = threading.Event()
        self.transcribed = 0

    def transcribe_batch(self, requests: Sequence[Request]) -> list[Result]:
        if self.transcribed:
            if self.fail_after_first:
                raise RuntimeError("the held model broke")
            # a guard: a stream that sends nothing before the end never sets `seen`, and then
            # the batches go on (and the test fails on what was transcribed before any delta)
            if not self.seen.wait(timeout=20):
                self.seen.set()
        results = self.model.transcribe_batch(requests)
        self.transcribed += len(results)
        return results


def _client(address: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://{address}/v1", api_key="local-test", max_retries=0)


def _valid(model: type[pydantic.BaseModel], payload: dict[str, Any]) -> Any:
    """`payload` validated by the SDK's `model`: every field it requires there, none it lacks."""
    assert set(payload) <= set(model.model_fields), f"unknown fields in {payload}"
    required = {name for name, field in model.model_fields.items() if field.is_required()}
    assert required <= set(payload), f"missing fields in {payload}"
    return model.model_validate(payload)


def _check_done(payload: dict[str, Any], deltas: list[str]) -> TranscriptionTextDoneEvent:
    done: TranscriptionTextDoneEvent = _valid(TranscriptionTextDoneEvent, payload)
    assert done.text == "".join(deltas)
    assert [language.code for language in done.languages or []] == ["en"]
    assert done.usage is not None and done.usage.type == "tokens"
    assert set(payload["usage"]) == set(type(done.usage).model_fields)  # every field filled
    assert set(payload["usage"]["input_token_details"]) == {"audio_tokens", "text_tokens"}
    details = done.usage.input_token_details
    assert details is not None and details.audio_tokens and details.text_tokens
    assert done.usage.input_tokens == details.audio_tokens + details.text_tokens
    total = done.usage.input_tokens + done.usage.output_tokens
    assert done.usage.output_tokens > 0 and done.usage.total_tokens == total
    return done


def _raw_events(address: str, path: Path, **fields: str) -> Iterator[dict[str, Any]]:
    """The SSE payloads of a streamed transcription, read with httpx, one JSON object each."""
    files = {"file": (path.name, path.read_bytes(), "audio/wav")}
    data = {"model": "whisper-1", "stream": "true", **fields}
    with (
        httpx.Client(base_url=f"http://{address}", timeout=300) as http,
        http.stream("POST", "/v1/audio/transcriptions", files=files, data=data) as answer,
    ):
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        for line in answer.iter_lines():
            assert not line or line.startswith("data: "), line
            if line:
                yield json.loads(line.removeprefix("data: "))


async def test_deltas_come_as_the_file_is_transcribed(
    tiny_model: SpeechModel, tmp_path: Path, long_file: Path
) -> None:
    held = HeldModel(tiny_model)
    done_before_first_delta: list[int] = []
    payloads: list[dict[str, Any]] = []

    def read() -> None:
        for payload in _raw_events(address, long_file):
            if payload["type"] == "transcript.text.delta" and not held.seen.is_set():
                done_before_first_delta.append(held.transcribed)
                held.seen.set()
            payloads.append(payload)

    async with serving(held, tmp_path) as address:
        await trio.to_thread.run_sync(read)
    kinds = [payload["type"] for payload in payloads]
    assert kinds == ["transcript.text.delta"] * (len(kinds) - 1) + ["transcript.text.done"]
    deltas = [_valid(TranscriptionTextDeltaEvent, p).delta for p in payloads[:-1]]
    assert len(deltas) >= 6, deltas  # one per clip, give or take a merged pair
    assert done_before_first_delta[0] < len(deltas) <= held.transcribed
    done = _check_done(payloads[-1], deltas)
    assert overlap(done.text, " ".join(reference(clip) for clip in CLIPS)) >= 0.7
    assert all(delta.startswith(" ") for delta in deltas[1:]) and deltas[0].strip() == deltas[0]


async def test_the_sdk_streams_for_every_alias(tiny_model: SpeechModel, tmp_path: Path) -> None:
    clip = DATA / "library.wav"

    def stream(model: str) -> list[Any]:
        with _client(address) as client, clip.open("rb") as file:
            events = client.audio.transcriptions.create(
                file=file, model=model, stream=True, response_format="text", language="en"
            )
            return list(events)

    async with serving(tiny_model, tmp_path) as address:
        for model in [*ALIASES, "tiny.en"]:
            events = await trio.to_thread.run_sync(stream, model)
            kinds = [event.type for event in events]
            assert kinds[-1] == "transcript.text.done" and len(kinds) >= 2, model
            deltas = []
            for event in events[:-1]:
                assert isinstance(event, TranscriptionTextDeltaEvent)
                deltas.append(_valid(EVENTS[event.type], event.to_dict()).delta)
            assert isinstance(events[-1], TranscriptionTextDoneEvent)
            done = _check_done(events[-1].to_dict(), deltas)
            assert overlap(done.text, LIBRARY) >= 0.8, (model, done.text)


async def test_models_list_and_retrieve(tiny_model: SpeechModel, tmp_path: Path) -> None:
    def call() -> tuple[list[Any], list[Any], dict[str, Any], openai.NotFoundError]:
        with _client(address) as client:
            listed = list(client.models.list())
            retrieved = [client.models.retrieve(model.id) for model in listed]
            with pytest.raises(openai.NotFoundError) as missing:
                client.models.retrieve("gpt-4o")
        raw = httpx.get(f"http://{address}/v1/models").json()
        return listed, retrieved, raw, missing.value

    async with serving(tiny_model, tmp_path) as address:
        listed, retrieved, raw, missing = await trio.to_thread.run_sync(call)
    assert [model.id for model in listed] == ["tiny.en", *ALIASES]
    assert [model.id for model in retrieved] == ["tiny.en", *ALIASES]
    assert set(raw) == {"object", "data"} and raw["object"] == "list"
    for model in raw["data"]:
        assert _valid(SdkModel, model).owned_by == "chorus"
    for model in [*listed, *retrieved]:
        _valid(SdkModel, model.to_dict())
    assert isinstance(missing.body, dict)
    assert (missing.body["code"], missing.body["param"]) == ("model_not_found", "model")


async def test_an_error_after_the_first_delta_ends_the_stream(
    tiny_model: SpeechModel, tmp_path: Path, long_file: Path
) -> None:
    held = HeldModel(tiny_model, fail_after_first=True)
    events: list[Any] = []

    def stream() -> None:
        with _client(address) as client, long_file.open("rb") as file:
            for event in client.audio.transcriptions.create(
                file=file, model="gpt-4o-transcribe", stream=True
            ):
                events.append(event)

    async with serving(held, tmp_path) as address:
        with pytest.raises(openai.APIError) as caught:
            await trio.to_thread.run_sync(stream)
    assert events and all(event.type == "transcript.text.delta" for event in events)
    assert isinstance(caught.value.body, dict)
    assert (caught.value.body["code"], caught.value.body["type"]) == ("model_error", "server_error")
    assert "failed" in caught.value.message


async def test_refusals_before_the_stream_are_json(tiny_model: SpeechModel, tmp_path: Path) -> None:
    clip = DATA / "weather.wav"

    def create(**fields: Any) -> Any:
        with _client(address) as client, clip.open("rb") as file:
            fields.setdefault("file", file)
            return client.audio.transcriptions.create(stream=True, **fields)

    def raw(path: str, **fields: str) -> httpx.Response:
        files = {"file": ("weather.wav", clip.read_bytes(), "audio/wav")}
        return httpx.post(f"http://{address}{path}", files=files, data=fields)

    refusals = []
    async with serving(tiny_model, tmp_path) as address:
        for fields in (
            {"model": "gpt-5"},
            {"model": "whisper-1", "response_format": "srt"},
            {"model": "whisper-1", "include": ["logprobs"]},
        ):
            with pytest.raises(openai.BadRequestError) as caught:
                await trio.to_thread.run_sync(functools.partial(create, **fields))
            refusals.append(caught.value)
        with pytest.raises(openai.BadRequestError) as not_audio:
            await trio.to_thread.run_sync(lambda: create(model="whisper-1", file=NOT_AUDIO))
        maybe = await trio.to_thread.run_sync(
            lambda: raw("/v1/audio/transcriptions", model="whisper-1", stream="maybe")
        )
        translated = await trio.to_thread.run_sync(
            lambda: raw("/v1/audio/translations", model="whisper-1", stream="true")
        )
    bodies = [refusal.body for refusal in [*refusals, not_audio.value]]
    assert all(r.response.headers["content-type"] == "application/json" for r in refusals)
    assert [(b["code"], b["param"]) for b in bodies if isinstance(b, dict)] == [
        ("model_not_found", "model"),
        ("unsupported_value", "response_format"),
        ("unsupported_value", "include[]"),
        ("not_audio", "file"),
    ]
    assert "logprobs" in refusals[2].message and "tiny.en" in refusals[0].message
    for answer, code in ((maybe, "invalid_value"), (translated, "unsupported_value")):
        assert answer.status_code == 400 and answer.headers["content-type"] == "application/json"
        assert (answer.json()["error"]["code"], answer.json()["error"]["param"]) == (code, "stream")
