"""WAV recordings: write-through, bounded buffer, header fixed on close or after a crash."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import trio

from actors.store.recording import (
    HEADER_BYTES,
    RecordingClosed,
    create_recording,
    repair_wav,
    wav_header,
)


def pcm(seconds: float, rate: int = 16000, seed: int = 0) -> bytes:
    samples = np.random.default_rng(seed).integers(-3000, 3000, int(seconds * rate), np.int16)
    return samples.astype("<i2").tobytes()


def read_wav(path: Path) -> tuple[int, bytes]:
    with wave.open(str(path), "rb") as reader:
        assert (reader.getnchannels(), reader.getsampwidth()) == (1, 2)
        return reader.getframerate(), reader.readframes(reader.getnframes())


async def test_appended_audio_round_trips_through_a_playable_wav(tmp_path: Path) -> None:
    audio = pcm(3.3, 16000)
    path = tmp_path / "a.wav"
    async with await create_recording(path, 16000, buffer_bytes=4096) as recording:
        for start in range(0, len(audio), 3202):  # ragged frames, as a client sends them
            await recording.append(audio[start : start + 3202])
    assert read_wav(path) == (16000, audio)
    assert recording.statistics().duration_s == pytest.approx(3.3)


async def test_float_samples_are_stored_as_int16(tmp_path: Path) -> None:
    samples = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -3.0], np.float32)
    async with await create_recording(tmp_path / "g.wav", 16000) as recording:
        await recording.append_samples(samples)
    _, data = read_wav(tmp_path / "g.wav")
    expected = [0, 16384, -16384, 32767, -32767, 32767, -32767]
    assert np.frombuffer(data, "<i2").tolist() == expected


async def test_memory_stays_within_the_buffer(tmp_path: Path) -> None:
    recording = await create_recording(tmp_path / "b.wav", 16000, buffer_bytes=8192)
    frame = pcm(0.1)  # 3200 bytes
    for _ in range(200):
        await recording.append(frame)
        assert recording.statistics().buffered < 8192
    written = recording.statistics().bytes_written
    assert written >= 200 * 3200 - 8192  # the rest went to the file as it arrived
    assert (tmp_path / "b.wav").stat().st_size == HEADER_BYTES + written
    await recording.aclose()
    assert read_wav(tmp_path / "b.wav") == (16000, frame * 200)


async def test_close_under_cancellation_still_fixes_the_header(tmp_path: Path) -> None:
    path = tmp_path / "c.wav"
    audio = pcm(1.0, 8000)
    with trio.CancelScope() as scope:
        async with await create_recording(path, 8000) as recording:
            await recording.append(audio)
            scope.cancel()
            await trio.sleep_forever()
    assert read_wav(path) == (8000, audio)


async def test_misuse_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sample rate"):
        await create_recording(tmp_path / "d.wav", 100)
    recording = await create_recording(tmp_path / "d.wav", 16000)
    with pytest.raises(ValueError, match="even"):
        await recording.append(b"\x01\x02\x03")
    await recording.aclose()
    await recording.aclose()  # idempotent
    with pytest.raises(RecordingClosed):
        await recording.append(b"\x00\x00")


def test_repair_sets_sizes_from_the_file_length(tmp_path: Path) -> None:
    path = tmp_path / "e.wav"
    audio = pcm(0.5, 16000)
    path.write_bytes(wav_header(16000, 0) + audio + b"\x07")  # a crash left a half sample
    assert repair_wav(path) == len(audio)
    assert read_wav(path) == (16000, audio)
    assert repair_wav(path) == len(audio)  # a sound file is left as it is
    not_ours = tmp_path / "f.wav"
    not_ours.write_bytes(b"ID3 not a wav file at all, but long enough to have a header")
    assert repair_wav(not_ours) is None
