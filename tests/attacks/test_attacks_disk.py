"""Filling the server's disk (issue 11 M1), kept here so that it stays fixed.

The server, not the client, decides what is recorded (`CHORUS_RECORDING`); a recording stops at
its cap (`CHORUS_MAX_RECORDING_S`), below the free-space floor (`CHORUS_MIN_FREE_BYTES`) and on
a write error (ENOSPC), each time with a playable WAV and one non-fatal frame, while the session
goes on and its finals are stored; a store that cannot commit does not end sessions either;
`/health` says `degraded`. The full-disk tests mount a small tmpfs (root only) and skip with the
reason elsewhere; the floor tests need no mount: a floor above the free space triggers it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import wave
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import trio
from conftest import fetch_recording, serve_app
from support.audio_files import DATA, load
from support.fakes import FakeModel
from support.ws_client import connect, receive_all, send_audio

from service.app import create_app
from service.config import Settings

GARDEN = load(DATA / "garden.wav")  # 3.9 s of speech: one final


def speech(utterances: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """`utterances` times the garden clip, each followed by a second of silence (~5 s each)."""
    return np.concatenate([GARDEN, np.zeros(16000, np.float32)] * utterances)


@asynccontextmanager
async def served(tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """A fake-model app whose data dir is `tmp_path`; audio is read as fast as it comes."""
    app = create_app(
        Settings(model="fake", data_dir=tmp_path, pace=0.0, **settings), model=FakeModel()
    )
    async with serve_app(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        yield address, http


async def stream(address: str, audio: np.ndarray[Any, Any], query: str = "") -> Session:
    async with connect(f"ws://{address}/v1/stream?{query}") as ws:
        await send_audio(ws, audio, chunk_s=0.5)
        await ws.send_message(json.dumps({"type": "stop"}))
        frames = await receive_all(ws)
        assert ws.closed is not None
        return Session(frames, ws.closed.code)


class Session:
    def __init__(self, frames: list[dict[str, Any]], close_code: int) -> None:
        self.frames, self.close_code = frames, close_code
        self.id = str(frames[0]["session_id"])

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [frame for frame in self.frames if frame["type"] == kind]

    def errors(self, code: str) -> list[dict[str, Any]]:
        return [frame for frame in self.of_type("error") if frame["code"] == code]

    def assert_went_on(self, finals: int) -> None:
        """Served to its end: every final, `stopped`, a normal close, nothing fatal."""
        assert self.frames[0]["type"] == "ready"
        assert len(self.of_type("final")) == finals
        assert self.frames[-1]["type"] == "stopped" and self.close_code == 1000
        assert not [frame for frame in self.of_type("error") if frame["fatal"]]


def read_wav(data: bytes, path: Path) -> tuple[int, int]:
    """(sample rate, frames) of a WAV whose header matches its length exactly."""
    path.write_bytes(data)
    with wave.open(str(path), "rb") as reader:
        assert (reader.getnchannels(), reader.getsampwidth()) == (1, 2)
        frames = reader.getnframes()
        assert len(data) == 44 + 2 * frames  # the header says what the file holds
        return reader.getframerate(), frames


# -- the server's policy ----------------------------------------------------------------------


async def test_deny_answers_a_record_request_and_the_session_goes_on_unrecorded(
    tmp_path: Path,
) -> None:
    async with served(tmp_path, recording="deny") as (address, http):
        session = await stream(address, speech(2), "record=true")
        stored = (await http.get(f"/v1/sessions/{session.id}")).json()
        audio = await fetch_recording(http, f"/v1/sessions/{session.id}/audio")
    session.assert_went_on(finals=2)
    (refused,) = session.errors("recording_disabled")
    assert session.frames[1] is refused  # right after `ready`
    assert not stored["has_audio"] and stored["utterances"] and audio.status_code == 404
    assert not list((tmp_path / "recordings").iterdir())


async def test_always_records_a_session_that_did_not_ask(tmp_path: Path) -> None:
    async with served(tmp_path, recording="always") as (address, http):
        session = await stream(address, speech(1))
        audio = await fetch_recording(http, f"/v1/sessions/{session.id}/audio")
    session.assert_went_on(finals=1)
    assert not session.of_type("error")
    assert audio.status_code == 200
    assert read_wav(audio.content, tmp_path / "out.wav") == (16000, len(speech(1)))


# -- the cap on one recording -----------------------------------------------------------------


async def test_a_recording_stops_at_its_cap_and_the_session_goes_on(tmp_path: Path) -> None:
    async with served(tmp_path, max_recording_s=2.0) as (address, http):
        session = await stream(address, speech(3), "record=true")
        stored = (await http.get(f"/v1/sessions/{session.id}")).json()
        audio = await fetch_recording(http, f"/v1/sessions/{session.id}/audio")
    session.assert_went_on(finals=3)
    (stopped,) = session.errors("recording_stopped")  # once, not once a frame
    assert "limit of 2 s" in stopped["message"]
    assert len(stored["utterances"]) == 3 and stored["has_audio"]
    assert read_wav(audio.content, tmp_path / "out.wav") == (16000, 2 * 16000)


# -- the free-space floor, without a mount ----------------------------------------------------


async def test_below_the_floor_nothing_is_recorded_and_health_is_degraded(
    tmp_path: Path,
) -> None:
    floor = shutil.disk_usage(tmp_path).free + (1 << 40)  # a terabyte more than there is
    async with served(tmp_path, min_free_bytes=floor) as (address, http):
        health = await http.get("/health")
        session = await stream(address, speech(2), "record=true")
        stored = (await http.get(f"/v1/sessions/{session.id}")).json()
    assert health.status_code == 200
    assert health.json()["status"] == "degraded" and health.json()["degraded"] == ["low_disk"]
    assert health.json()["disk"]["low"] and health.json()["disk"]["min_free_bytes"] == floor
    session.assert_went_on(finals=2)
    (stopped,) = session.errors("recording_stopped")
    assert "low on disk space" in stopped["message"] and str(floor) not in stopped["message"]
    assert not stored["has_audio"] and len(stored["utterances"]) == 2
    assert not list((tmp_path / "recordings").iterdir())


async def test_health_is_ok_above_the_floor(tmp_path: Path) -> None:
    async with served(tmp_path, min_free_bytes=1) as (_, http):
        health = await http.get("/health")
    assert health.json()["status"] == "ok" and health.json()["disk"]["low"] is False
    assert "degraded" not in health.json()


# -- a real full disk: a small tmpfs ----------------------------------------------------------


@pytest.fixture
def small_disk() -> Iterator[Callable[[Path, str], Path]]:
    """`mount(path, size)`: a tmpfs of `size` at `path`, unmounted after the test."""
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("a full disk needs a small tmpfs, and mounting one needs root")
        path.mkdir(parents=True, exist_ok=True)
        command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(directory: Path) -> Path:
    """Write a file into `directory` until its disk is full (ENOSPC)."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as file:
        try:
            while True:
                file.write(bytes(4096))
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


async def test_a_recording_that_fills_the_disk_stops_and_finals_are_still_stored(
    tmp_path: Path, small_disk: Callable[[Path, str], Path]
) -> None:
    """No floor: the recording's own write fails (ENOSPC) on a 1 MiB disk after ~32 s."""
    small_disk(tmp_path / "recordings", "1m")
    async with served(tmp_path, min_free_bytes=0) as (address, http):
        session = await stream(address, speech(12), "record=true")  # 60 s: 1.9 MB of WAV
        stored = (await http.get(f"/v1/sessions/{session.id}")).json()
        audio = await fetch_recording(http, f"/v1/sessions/{session.id}/audio")
        health = await http.get("/health")
    session.assert_went_on(finals=12)
    (stopped,) = session.errors("recording_stopped")
    assert "could not write" in stopped["message"]
    assert len(stored["utterances"]) == 12 and stored["end_reason"] is not None
    rate, frames = read_wav(audio.content, tmp_path / "out.wav")
    assert rate == 16000 and 10 * 16000 < frames < 33 * 16000  # what fitted, playable
    assert health.status_code == 200 and health.json()["status"] == "ok"  # no floor set


async def test_a_running_recording_stops_at_the_floor_leaving_room(
    tmp_path: Path, small_disk: Callable[[Path, str], Path]
) -> None:
    recordings = small_disk(tmp_path / "recordings", "2m")
    floor = 1 << 20
    async with served(tmp_path, min_free_bytes=floor) as (address, http):
        assert (await http.get("/health")).json()["status"] == "ok"
        session = await stream(address, speech(12), "record=true")
        stored = (await http.get(f"/v1/sessions/{session.id}")).json()
        audio = await fetch_recording(http, f"/v1/sessions/{session.id}/audio")
        assert shutil.disk_usage(recordings).free >= floor  # it stopped before the floor
        (recordings / "other").write_bytes(bytes(128 * 1024))  # something else takes the rest
        health = (await http.get("/health")).json()
        later = await stream(address, speech(1), "record=true")
        later_stored = (await http.get(f"/v1/sessions/{later.id}")).json()
    session.assert_went_on(finals=12)
    (stopped,) = session.errors("recording_stopped")
    assert "low on disk space" in stopped["message"]
    assert len(stored["utterances"]) == 12
    _, frames = read_wav(audio.content, tmp_path / "out.wav")
    assert 10 * 16000 < frames < 33 * 16000  # stopped near 1 MiB, not at the full disk
    assert health["status"] == "degraded" and health["degraded"] == ["low_disk"]
    later.assert_went_on(finals=1)  # below the floor, a new recording does not start
    assert len(later.errors("recording_stopped")) == 1 and not later_stored["has_audio"]


async def test_a_full_disk_under_the_store_does_not_end_sessions(
    tmp_path: Path, small_disk: Callable[[Path, str], Path]
) -> None:
    """SQLite cannot commit: each session is told once (`not_stored`), and its finals go on."""
    data = small_disk(tmp_path / "data", "4m")
    async with served(data, min_free_bytes=0) as (address, http):
        filler = fill(data)
        async with trio.open_nursery() as nursery:
            results: list[Session] = []

            async def one() -> None:
                results.append(await stream(address, speech(2)))

            for _ in range(3):  # sessions whose writes share a failing batch
                nursery.start_soon(one)
        health = (await http.get("/health")).json()
        filler.unlink()
    for session in results:
        session.assert_went_on(finals=2)
        assert len(session.errors("not_stored")) == 1
    assert health["status"] == "degraded" and "store_failing" in health["degraded"]
    assert health["store"]["failing"]
