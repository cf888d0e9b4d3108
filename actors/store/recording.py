"""Session recordings: 16-bit mono PCM appended to a WAV file as it arrives.

Ownership: a `RecordingWriter` belongs to the one session task that opened it (through
`StoreHandle.open_recording`). It keeps at most `buffer_bytes` of audio in memory; a full buffer
is handed to a worker thread (`trio.to_thread.run_sync`, never abandoned on cancel) and written
through to the file, so the OS page cache, not our process, holds the audio. A per-writer
`CapacityLimiter(1)` keeps the writes in order and the file owned by one thread at a time.

The header is written with sizes of zero when the file is created and fixed by `aclose()`, which
runs shielded from cancellation so a cancelled session still leaves a playable file. When the
process dies instead, `repair_wav()` (run by `open_store` at start-up) sets the sizes from the
file's length. A writer holds an exclusive `flock` on its file until it closes it, so that a
replica starting on a directory it shares with others can tell a recording still being written
elsewhere and leave it alone (`repair_idle_wav`; on NFS the lock needs the lock manager, as NFSv4
has and a `nolock` mount has not). Memory per recording: at most `2 * buffer_bytes` plus the frame
being appended (one buffer waiting in the thread, one filling).

Disk policy (`RecordingPolicy`, issue 11 M1): a recording holds at most `max_bytes` of audio,
and each write-through first checks that the disk keeps `min_free_bytes` free after it
(`shutil.disk_usage`, one `statvfs` in the thread that writes anyway). Past either limit, or
when a write fails (ENOSPC, EIO), the writer stops: it keeps the audio it wrote, closes the
file with a header that matches it, drops what comes after, and says why in `stopped`. Its
owner learns of it from `append()`'s return value and carries on without a recording.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import struct
from pathlib import Path
from typing import BinaryIO, Literal

import attrs
import numpy as np
import numpy.typing as npt
import trio

HEADER_BYTES = 44
SAMPLE_WIDTH = 2
DEFAULT_BUFFER_BYTES = 32 * 1024
_MAX_DATA_BYTES = 0xFFFF_FFFF - (HEADER_BYTES - 8)


RecordingMode = Literal["allow", "deny", "always"]
StopReason = Literal["limit", "low_disk", "write_error"]


class RecordingClosed(Exception):
    """`append()` after `aclose()`."""


class LowDiskSpace(Exception):
    """The recordings' disk has less free space than the policy's floor; nothing is started."""


@attrs.frozen
class RecordingPolicy:
    """The server's rules for recordings (`CHORUS_RECORDING`, `CHORUS_MAX_RECORDING_S`,
    `CHORUS_MIN_FREE_BYTES`): whether a session is recorded, and how much disk it may take."""

    mode: RecordingMode = "allow"  # the client's `record` decides; "deny": never; "always"
    max_bytes: int = _MAX_DATA_BYTES  # of audio per recording (a WAV file cannot hold more)
    min_free_bytes: int = 0  # recordings stop before the disk has less free than this

    def records(self, requested: bool) -> bool:
        """Whether a session whose client asked for `requested` is recorded."""
        return self.mode == "always" or (self.mode == "allow" and requested)

    def check_free_space(self, directory: Path, incoming: int = 0) -> None:
        """Raise `LowDiskSpace` unless `incoming` more bytes leave the floor free (blocking)."""
        if not self.min_free_bytes:
            return
        free = shutil.disk_usage(directory).free
        if free - incoming < self.min_free_bytes:
            raise LowDiskSpace(
                f"{free} bytes free on the recordings' disk, the floor is {self.min_free_bytes}"
            )


DEFAULT_POLICY = RecordingPolicy()  # the client decides; no limit but the WAV format's


@attrs.frozen
class RecordingStatistics:
    path: Path
    sample_rate: int
    bytes_written: int
    buffered: int
    dropped: int
    stopped: StopReason | None

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
        return _repair(file)


def repair_idle_wav(path: Path) -> bool:
    """`repair_wav`, unless a writer holds the file's lock (a recording still being written,
    by another process); False then, and the file is left as it is (blocking)."""
    with path.open("r+b") as file:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:  # no locks on this file system (ENOLCK): nothing tells, so fixed
            pass
        _repair(file)  # the lock goes with the file
        return True


def _repair(file: BinaryIO) -> int | None:
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
    path: Path,
    sample_rate: int,
    *,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    policy: RecordingPolicy = DEFAULT_POLICY,
) -> RecordingWriter:
    """Create (or truncate) `path` with an empty WAV header and return its writer.

    Raises `LowDiskSpace` below the policy's floor, and the `OSError` of a file that cannot be
    created; a half-created file is removed.
    """
    if not 8000 <= sample_rate <= 192_000:
        raise ValueError(f"sample rate {sample_rate} is out of range")

    def create() -> BinaryIO:
        policy.check_free_space(path.parent, HEADER_BYTES)
        # unbuffered: a failed write leaves nothing behind in a buffer that `close()` retries
        file = path.open("wb", buffering=0)
        # held until the file is closed (waits out a start-up's `repair_idle_wav` of it); no
        # locks on that file system (ENOLCK): start-up cannot tell, and may fix its header early
        with contextlib.suppress(OSError):
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)
        _, error = _write_all(file, wav_header(sample_rate, 0))
        if error is not None:
            file.close()
            path.unlink(missing_ok=True)
            raise error
        return file

    file = await trio.to_thread.run_sync(create)
    return RecordingWriter(path, sample_rate, file, buffer_bytes, policy)


def _write_all(file: BinaryIO, data: bytes) -> tuple[int, OSError | None]:
    """Write `data` whole (an unbuffered write may take part of it): the bytes written, and the
    error that stopped it (ENOSPC, EIO), so the header can say what the file holds."""
    view, done = memoryview(data), 0
    try:
        while done < len(data):
            done += file.write(view[done:])
    except OSError as error:
        return done, error
    return done, None


class RecordingWriter(trio.abc.AsyncResource):
    """Appends 16-bit PCM to one WAV file; `async with` or `aclose()` fixes the header."""

    def __init__(
        self,
        path: Path,
        sample_rate: int,
        file: BinaryIO,
        buffer_bytes: int,
        policy: RecordingPolicy = DEFAULT_POLICY,
    ) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self._file = file
        self._buffer_bytes = buffer_bytes
        self._policy = policy
        self._max_bytes = min(policy.max_bytes, _MAX_DATA_BYTES) // SAMPLE_WIDTH * SAMPLE_WIDTH
        self._buffer = bytearray()
        self._written = 0
        self._dropped = 0
        self._closed = False
        self.stopped: StopReason | None = None
        self.stop_detail = ""
        self._limiter = trio.CapacityLimiter(1)

    async def append(self, pcm: bytes) -> bool:
        """Add little-endian int16 samples; writes through once `buffer_bytes` are waiting.

        Returns False once the recording has stopped (`stopped` says why; the file is closed
        and playable): the audio is dropped, and so is all that comes after it."""
        if self._closed and self.stopped is None:
            raise RecordingClosed(str(self.path))
        if len(pcm) % SAMPLE_WIDTH:
            raise ValueError("16-bit PCM must have an even number of bytes")
        if self.stopped is not None:
            self._dropped += len(pcm)
            return False
        room = self._max_bytes - self._written - len(self._buffer)
        if len(pcm) >= room:  # the recording is full: keep what fits, then stop
            self._dropped += len(pcm) - room
            self._buffer += pcm[:room]
            await self._flush()
            await self._stop("limit", f"it reached its limit of {self._max_bytes} bytes")
            return False
        self._buffer += pcm
        if len(self._buffer) >= self._buffer_bytes:
            await self._flush()
        return self.stopped is None

    async def append_samples(self, samples: npt.NDArray[np.float32]) -> bool:
        """Add float samples in [-1, 1] (the pipeline's 16 kHz audio), stored as int16."""
        pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
        return await self.append(pcm.tobytes())

    async def _flush(self) -> None:
        chunk, self._buffer = bytes(self._buffer), bytearray()
        if not chunk:
            return
        written, (reason, detail) = await trio.to_thread.run_sync(
            self._write_through, chunk, limiter=self._limiter
        )
        self._written += written
        if reason is not None:
            self._dropped += len(chunk) - written
            await self._stop(reason, detail)

    def _write_through(self, chunk: bytes) -> tuple[int, tuple[StopReason | None, str]]:
        """Check the floor, then write (in the writer's thread): bytes written, why it stopped."""
        try:
            self._policy.check_free_space(self.path.parent, len(chunk))
        except LowDiskSpace as low:
            return 0, ("low_disk", str(low))
        written, error = _write_all(self._file, chunk)
        if error is not None:
            return written, ("write_error", f"writing it failed: {error.strerror or error}")
        return written, (None, "")

    async def _stop(self, reason: StopReason, detail: str) -> None:
        """Take no more audio; close the file with a header that matches what it holds."""
        if self.stopped is None:
            self.stopped, self.stop_detail = reason, detail
            await self.aclose()

    async def aclose(self) -> None:
        """Write what is buffered, fix the header and close the file (shielded)."""
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            await self._flush()
            await trio.to_thread.run_sync(self._finish, limiter=self._limiter)

    def _finish(self) -> None:
        """Cut a half-written sample, then write the header (in place: it needs no new space)."""
        try:
            self._written -= self._written % SAMPLE_WIDTH
            self._file.truncate(HEADER_BYTES + self._written)
            self._file.seek(0)
            _, error = _write_all(self._file, wav_header(self.sample_rate, self._written))
            if error is not None:
                raise error  # start-up repair fixes the header from the file's length
        finally:
            self._file.close()

    def statistics(self) -> RecordingStatistics:
        return RecordingStatistics(
            path=self.path,
            sample_rate=self.sample_rate,
            bytes_written=self._written,
            buffered=len(self._buffer),
            dropped=self._dropped,
            stopped=self.stopped,
        )
