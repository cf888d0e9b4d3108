"""Regenerates `tests/data/call_me_back.wav`, the speech the browser tests feed to Chromium.

Chromium's fake microphone (`--use-file-for-fake-audio-capture`) loops this file, so it holds two
sentences spoken by `espeak-ng` (ones the tiny.en model transcribes reliably), each followed by a
pause long enough for the server to end the utterance.
Run `uv run python tests/support/web/make_speech_clip.py` (needs the `espeak-ng` package).
"""

from __future__ import annotations

import io
import subprocess
import wave
from pathlib import Path

import numpy as np
import soxr

SENTENCES = (
    "Please call me back tomorrow morning.",
    "The train to London leaves at seven o'clock.",
)
RATE = 16000
LEAD_S = 0.5
PAUSE_S = 1.5
OUTPUT = Path(__file__).resolve().parents[2] / "data" / "call_me_back.wav"


def speak(sentence: str) -> np.ndarray:
    """Speaks one sentence with espeak-ng and returns float32 mono samples at `RATE`."""
    wav = subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "140", "--stdout", sentence],
        check=True,
        capture_output=True,
    ).stdout
    with wave.open(io.BytesIO(wav)) as reader:
        rate = reader.getframerate()
        frames = reader.readframes(reader.getnframes())
    samples = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    resampled: np.ndarray = soxr.resample(samples, rate, RATE)
    return resampled


def main() -> None:
    parts = [np.zeros(int(LEAD_S * RATE), dtype=np.float32)]
    for sentence in SENTENCES:
        parts += [speak(sentence), np.zeros(int(PAUSE_S * RATE), dtype=np.float32)]
    audio = np.concatenate(parts)
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(OUTPUT), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(RATE)
        writer.writeframes(pcm.tobytes())
    print(f"{OUTPUT}: {len(pcm) / RATE:.2f} s")


if __name__ == "__main__":
    main()
