"""`chorus transcribe` and `chorus stream` (service/tools.py), in-process with tiny.en."""

from __future__ import annotations

import argparse
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from support.dialect_helpers import DATA, load_make_clips, overlap, serving

from actors.audio.file_decoder import decode_file
from actors.model.port import SpeechModel
from service.tools import add_commands, run_command, stream_file, stream_url, transcribe_files

WEATHER = "The weather today is sunny with a light breeze from the west."
GARDEN = "My grandmother planted tomatoes and roses in her garden."


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chorus")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def _long_file(tmp_path: Path) -> Path:
    """About 40 s of the project's own speech with pauses (enough for the progress bar)."""
    pause = np.zeros(16000, np.float32)
    clips = [decode_file(DATA / name) for name in ("weather.wav", "library.wav", "garden.wav")]
    audio = np.concatenate([piece for _ in range(4) for clip in clips for piece in (clip, pause)])
    path = tmp_path / "long.wav"
    path.write_bytes(
        load_make_clips().encode_clip(
            audio[np.newaxis, :], 16000, container="wav", codec="pcm_s16le"
        )
    )
    return path


async def test_several_files_as_srt_with_a_bad_one_among_them(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("not audio\n" * 50)
    out, err = io.StringIO(), io.StringIO()
    files = [DATA / "weather.wav", junk, DATA / "garden.wav"]
    status = await transcribe_files(tiny_model, files, "srt", None, None, out, err)
    assert status == 1
    assert "notes.txt" in err.getvalue() and "audio" in err.getvalue()
    text = out.getvalue()
    assert text.count("==> ") == 2
    weather, garden = text.split("==> ")[1:]
    for block, sentence in [(weather, WEATHER), (garden, GARDEN)]:
        cues = re.findall(
            r"^\d+\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.+)$", block, re.MULTILINE
        )
        assert cues and all(start < end for start, end, _ in cues)
        assert overlap(" ".join(cue[2] for cue in cues), sentence) >= 0.7


async def test_long_file_shows_progress_and_writes_json(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    path = _long_file(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    status = await transcribe_files(tiny_model, [path], "json", None, tmp_path / "out", out, err)
    assert status == 0 and out.getvalue() == ""
    bar = err.getvalue()
    assert "long.wav [" in bar and bar.rstrip().endswith("s") and "100%" in bar
    body = json.loads((tmp_path / "out" / "long.json").read_text())
    assert set(body) == {"task", "language", "duration", "text", "segments", "words"}
    assert body["language"] == "english" and body["duration"] > 30
    assert overlap(body["text"], WEATHER + " " + GARDEN) >= 0.8
    assert body["words"] and body["segments"][-1]["end"] <= body["duration"]


def test_the_transcribe_command_end_to_end(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through argument parsing and the model loader, as `chorus transcribe` runs it."""
    monkeypatch.setenv("CHORUS_COMPUTE_TYPE", "int8")
    args = _parser().parse_args(
        [
            "transcribe",
            str(DATA / "library.wav"),
            "--model",
            "tiny.en",
            "--cpu-threads",
            "2",
            "--language",
            "English",
        ]
    )
    assert run_command(args) == 0
    printed = capsys.readouterr().out
    assert printed.endswith("\n") and printed.count("\n") == 1
    assert overlap(printed, "Please return the library books before Friday afternoon.") >= 0.8
    french = _parser().parse_args(
        ["transcribe", str(DATA / "library.wav"), "--model", "tiny.en", "--language", "fr"]
    )
    assert run_command(french) == 2
    assert "does not know" in capsys.readouterr().err


def test_stream_url() -> None:
    assert stream_url("ws://h:1", None) == "ws://h:1/v1/stream"
    assert stream_url("ws://h:1/", "en") == "ws://h:1/v1/stream?language=en"
    assert stream_url("wss://h/v1/stream?interim=true", "de") == (
        "wss://h/v1/stream?interim=true&language=de"
    )


async def test_stream_prints_partials_and_finals(tiny_model: SpeechModel, tmp_path: Path) -> None:
    path = _long_file(tmp_path)
    out = io.StringIO()
    # 8x real time on purpose (the server's pacing would hold it to 1.5x: test_session.py)
    async with serving(tiny_model, tmp_path, pace=0) as address:
        status = await stream_file(f"ws://{address}", path, 8.0, 100, "en", None, out)
    assert status == 0
    lines = out.getvalue().splitlines()
    finals = [line for line in lines if line.startswith("[")]
    assert len(finals) >= 10
    times = [tuple(map(float, re.findall(r"\d+\.\d+", line)[:2])) for line in finals]
    assert all(start < end for start, end in times)
    assert [start for start, _ in times] == sorted(start for start, _ in times)
    assert overlap(" ".join(finals), WEATHER + " " + GARDEN) >= 0.8
    assert any(line.startswith("… ") for line in lines)  # partials at 8x real time still come
