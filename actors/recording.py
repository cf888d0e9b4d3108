"""Session recordings: 16-bit mono PCM appended to a WAV file as it arrives.

Ownership: a `RecordingWriter` belongs to the one session task that opened it (through
`StoreHandle.open_recording`). It keeps at most `buffer_bytes` of audio in memory; a full buffer
is handed to a worker thread (`trio.to_thread.run_sync`, never abandoned on cancel) and written
through to the file, so the OS page cache, not our process, holds the audio. A per-writer
`CapacityLimiter(1)` keeps the writes in order and the file owned by one thread at a time.

The header is written with sizes of zero when the file is created and fixed by `aclose()`, which
runs shielded from cancellation so a cancelled session still leaves a playable file. When the
process dies instead, `repair_wav()` (run by `open_store` at start-up) sets the sizes from the
file's length. Memory per recording: at most `2 * buffer_bytes` plus the frame being appended
(one buffer waiting in the thread, one filling).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO

import attrs
import numpy as np
import numpy.typing as npt
import trio

HEADER_BYTES = 44
SAMPLE_WIDTH = 2
DEFAULT_BUFFER_BYTES = 32 * 1024
_MAX_DATA_BYTES = 0xFFFF_FFFF - (HEADER_BYTES - 8)


class RecordingClosed(Exception):
    """`append()` after `aclose()`."""


@attrs.frozen
class RecordingStatistics:
    path: Path
    sample_rate: int
    bytes_written: int
    buffered: int
    dropped: int

    @property
    def duration_s(self) -> float:
        return (self.bytes_written + self.buffered) / (SAMPLE_WIDTH * self.sample_rate)


def wav_header(sample_rate: int, data_bytes: int) -> bytes:
    """The canonical 44-byte header of a 16-bit mono PCM WAV file."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        1,  # mono
        sample_rate,
        sample_rate * SAMPLE_WIDTH,
        SAMPLE_WIDTH,
        8 * SAMPLE_WIDTH,
        b"data",
        data_bytes,
    )


def repair_wav(path: Path) -> int | None:
    """Fix the sizes in the header of one of our WAV files from its length (blocking).

    Returns the number of audio bytes, or None when the file is not one of ours (left alone).
    A trailing odd byte (half a sample) is cut off.
    """
    with path.open("r+b") as file:
        header = file.read(HEADER_BYTES)
        if len(header) < HEADER_BYTES or header[:4] != b"RIFF" or header[36:40] != b"data":
            return None
        (sample_rate,) = struct.unpack_from("<I", header, 24)
        (riff_size,) = struct.unpack_from("<I", header, 4)
        (data_bytes,) = struct.unpack_from("<I", header, 40)
        length = os.fstat(file.fileno()).st_size
        actual = min(length - HEADER_BYTES, _MAX_DATA_BYTES) // SAMPLE_WIDTH * SAMPLE_WIDTH
        if actual != length - HEADER_BYTES:
            file.truncate(HEADER_BYTES + actual)
        if (data_bytes, riff_size) != (actual, 36 + actual):
            file.seek(0)
            file.write(wav_header(sample_rate, actual))
        return actual


async def create_recording(
    path: Path, sample_rate: int, *, buffer_bytes: int = DEFAULT_BUFFER_BYTES
) -> RecordingWriter:
    """Create (or truncate) `path` with an empty WAV header and return its writer."""
    if not 8000 <= sample_rate <= 192_000:
        raise ValueError(f"sample rate {sample_rate} is out of range")

    def create() -> BinaryIO:
        file = path.open("wb")
        file.write(wav_header(sample_rate, 0))
        file.flush()
        return file

    file = await trio.to_thread.run_sync(create)
    return RecordingWriter(path, sample_rate, file, buffer_bytes)


class RecordingWriter(trio.abc.AsyncResource):
    """Appends 16-bit PCM to one WAV file; `async with` or `aclose()` fixes the header."""

    def __init__(self, path: Path, sample_rate: int, file: BinaryIO, buffer_bytes: int) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self._file = file
        self._buffer_bytes = buffer_bytes
        self._buffer = bytearray()
        self._written = 0
        self._dropped = 0
        self._closed = False
        self._limiter = trio.CapacityLimiter(1)

    async def append(self, pcm: bytes) -> None:
        """Add little-endian int16 samples; writes through once `buffer_bytes` are waiting."""
        if self._closed:
            raise RecordingClosed(str(self.path))
        if len(pcm) % SAMPLE_WIDTH:
            raise ValueError("16-bit PCM must have an even number of bytes")
        room = _MAX_DATA_BYTES - self._written - len(self._buffer)
        if len(pcm) > room:  # a WAV file cannot hold more than 4 GiB; keep what fits
            self._dropped += len(pcm) - max(room, 0)
            pcm = pcm[: max(room, 0)]
        self._buffer += pcm
        if len(self._buffer) >= self._buffer_bytes:
            await self._flush()

    async def append_samples(self, samples: npt.NDArray[np.float32]) -> None:
        """Add float samples in [-1, 1] (the pipeline's 16 kHz audio), stored as int16."""
        pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
        await self.append(pcm.tobytes())

    async def _flush(self) -> None:
        chunk, self._buffer = bytes(self._buffer), bytearray()
        if chunk:
            await trio.to_thread.run_sync(self._file.write, chunk, limiter=self._limiter)
            self._written += len(chunk)

    async def aclose(self) -> None:
        """Write what is buffered, fix the header and close the file (shielded)."""
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            await self._flush()
            await trio.to_thread.run_sync(self._finish, limiter=self._limiter)

    def _finish(self) -> None:
        try:
            self._file.seek(0)
            self._file.write(wav_header(self.sample_rate, self._written))
        finally:
            self._file.close()

    def statistics(self) -> RecordingStatistics:
        return RecordingStatistics(
            path=self.path,
            sample_rate=self.sample_rate,
            bytes_written=self._written,
            buffered=len(self._buffer),
            dropped=self._dropped,
        )
