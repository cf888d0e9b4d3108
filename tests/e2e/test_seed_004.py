"""Seed 004, ChatServer: `POST /transcribe` exactly as its README shows, against a real server
with tiny.en and real speech.

The README's request is `curl -X POST -F "file=@/path/to/your/audio.webm" -F
"language=english" http://127.0.0.1:8000/transcribe` (curl sends a `.webm` part as
`application/octet-stream`), and its answer is `{"transcript": "..."}`: that key and no other,
a string. It names `.webm`, `.m4a` and `.wav` files (here real speech encoded as each), and
`"french"`, `"english"`, `"fr"`, `"en"` as languages (tiny.en knows English only, so French is
refused). The README shows no error; errors carry FastAPI's `detail`."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import soxr
from conftest import serve_app
from starlette.applications import Starlette
from support.dialect_helpers import (
    DATA,
    load_make_clips,
    overlap,
    reference,
    serving,
    speech,
)

from actors.audio.file_decoder import decode_file
from actors.model.port import SpeechModel
from service.app import create_app
from service.config import Settings

JFK = "faster_whisper/jfk.flac"  # "And so my fellow Americans, ask not what your country ..."
GARDEN = "my grandmother planted tomatoes and roses in her garden"
# container, codec, what curl labels the part (`.webm` and `.m4a` as it would, by extension)
ENCODINGS = [
    ("webm", "libopus", "application/octet-stream"),  # what a browser's MediaRecorder makes
    ("ipod", "aac", "audio/mp4"),
    ("wav", "pcm_s16le", "audio/x-wav"),
]
SUFFIX = {"webm": ".webm", "ipod": ".m4a", "wav": ".wav"}


def _recording(container: str, codec: str) -> bytes:
    """Real speech (JFK) as a 48 kHz mono file of `container`, as a recorder would make it."""
    voice = decode_file(speech(JFK))
    samples = soxr.resample(voice, 16000, 48000).astype(np.float32)[np.newaxis, :]
    encoded: bytes = load_make_clips().encode_clip(
        samples, 48000, container=container, codec=codec, options={"b": "32000"}
    )
    return encoded


def _app(model: SpeechModel, data_dir: Path) -> Starlette:
    return create_app(Settings(model="tiny.en", data_dir=data_dir), model=model)


@pytest.mark.parametrize(("container", "codec", "content_type"), ENCODINGS)
async def test_the_readme_request_gets_the_readme_answer(
    tiny_model: SpeechModel, tmp_path: Path, container: str, codec: str, content_type: str
) -> None:
    audio = _recording(container, codec)
    async with (
        serve_app(_app(tiny_model, tmp_path)) as address,
        httpx.AsyncClient(timeout=60) as http,
    ):
        answer = await http.post(
            f"http://{address}/transcribe",
            files={"file": (f"audio{SUFFIX[container]}", audio, content_type)},
            data={"language": "english"},
        )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert list(body) == ["transcript"]
    assert isinstance(body["transcript"], str)
    assert overlap(body["transcript"], reference(JFK)) >= 0.7, body


async def test_language_codes_verbose_and_errors(tiny_model: SpeechModel, tmp_path: Path) -> None:
    clip = (DATA / "garden.wav").read_bytes()
    async with (
        serve_app(_app(tiny_model, tmp_path)) as address,
        httpx.AsyncClient(base_url=f"http://{address}", timeout=60) as http,
    ):
        by_code = await http.post(
            "/transcribe", files={"file": ("audio.wav", clip)}, data={"language": "en"}
        )
        verbose = await http.post(
            "/transcribe?verbose=true",
            files={"file": ("audio.wav", clip)},
            data={"language": "english"},
        )
        french = await http.post(
            "/transcribe", files={"file": ("audio.wav", clip)}, data={"language": "french"}
        )
        text = await http.post(
            "/transcribe",
            files={"file": ("audio.webm", b"not audio at all\n" * 40)},
            data={"language": "english"},
        )
    assert by_code.status_code == 200 and list(by_code.json()) == ["transcript"]
    assert overlap(by_code.json()["transcript"], GARDEN) >= 0.6
    # what the README does not show comes only when asked for
    body = verbose.json()
    assert list(body) == ["transcript", "language", "duration"]
    assert isinstance(body["transcript"], str) and body["language"] == "en"
    assert isinstance(body["duration"], float) and 2.0 < body["duration"] < 10.0
    # errors: FastAPI's `detail` (what the seed's clients read) beside Chorus's `error`
    for refused, status, code in [(french, 400, "unsupported_language"), (text, 415, "not_audio")]:
        assert refused.status_code == status
        error = refused.json()
        assert list(error) == ["detail", "error"]
        assert isinstance(error["detail"], str) and error["detail"]
        assert error["error"] == {"code": code, "message": error["detail"]}


# -- beyond the README: languages by name or code, `?verbose` (was test_seeds.py) -------------


async def test_chatserver_transcribe_takes_a_name_or_a_code(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    clip = (DATA / "garden.wav").read_bytes()
    async with (
        serving(tiny_model, tmp_path) as address,
        httpx.AsyncClient(base_url=f"http://{address}", timeout=60) as http,
    ):
        answers = [
            await http.post(
                "/transcribe?verbose=true",
                files={"file": ("garden.wav", clip, "audio/wav")},
                data={"language": language},
            )
            for language in ("english", "en", "English")
        ]
        no_language = await http.post("/transcribe?verbose=1", files={"file": ("g.wav", clip)})
    for answer in [*answers, no_language]:
        assert answer.status_code == 200
        body = answer.json()
        assert set(body) == {"transcript", "language", "duration"}
        assert body["language"] == "en"
        assert (
            overlap(body["transcript"], "my grandmother planted tomatoes and roses in her garden")
            >= 0.7
        )
