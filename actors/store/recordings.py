"""Where finished recordings are kept (issue 23): one small interface, `RecordingStore`, with a
directory (`LocalRecordings`, today's behaviour, also a directory that replicas share) and an
S3-compatible object store (`actors.store.s3.S3Recordings`) behind it.

Every recording is written the same way whatever keeps it: a `RecordingWriter` appends to
`<directory>/<session_id>.wav` while its session runs (bounded by the `RecordingPolicy`). When
it is closed, `keep()` puts the finished file where recordings are kept: a directory keeps it
where it is; the object store uploads it to `<prefix>/<session_id>.wav` and removes the local
file (its `directory` is a spool). `locate()` says where a finished recording can be read: a
`Path` on this machine's disk, a `StoredObject` elsewhere, or None.

Ownership: `open_store()` opens the store (`LocalRecordings`, or `open_s3_recordings`) and
closes it after the database; the blocking calls of either kind run in worker threads
(`trio.to_thread.run_sync`, never abandoned on cancel). `recover()` runs once at start-up in
the store's nursery (cancelled when the store closes), after the crash repair.

Nothing here deletes a recording that nobody asked to delete: a file whose session this
replica's database does not know may be another replica's (a shared directory), so start-up
leaves it. Deleting a session deletes its audio before its row (`StoreHandle.delete_session`),
so a crash between the two leaves a row whose audio is gone, never audio without a row.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlsplit

import attrs
import trio

CHUNK_BYTES = 64 * 1024  # what one read hands to a response


class RecordingsUnreachable(OSError):
    """The object store refused a request or could not be reached (credentials, bucket,
    network); an `OSError`, as a failing disk is."""


@attrs.frozen
class StoredObject:
    """A finished recording kept away from this machine: what a ranged read needs first."""

    size: int
    etag: str
    modified: datetime


class RecordingStore(Protocol):
    """Where finished recordings are kept; see the module docstring."""

    @property
    def directory(self) -> Path:
        """Where recordings are written while their sessions run."""
        ...

    async def check(self) -> None:
        """Raise `RecordingsUnreachable` when a new recording could not be kept."""

    async def keep(self, path: Path) -> None:
        """`path` is a finished recording in `directory`: keep it (raises `OSError`)."""

    async def locate(self, session_id: str) -> Path | StoredObject | None:
        """Where the finished recording can be read, or None when there is none."""

    async def read(self, session_id: str, start: int, stop: int) -> trio.abc.ReceiveStream:
        """Bytes `start` to `stop` (exclusive) of the recording, in chunks; close it."""
        ...

    async def delete(self, session_ids: Sequence[str]) -> None:
        """Delete these sessions' recordings wherever they are (none is fine)."""

    async def recover(self, ended: Collection[str]) -> None:
        """Start-up: keep what a crash left in `directory` for these ended sessions."""

    async def aclose(self) -> None: ...


@attrs.frozen
class RecordingsConfig:
    """Where recordings are written and kept (`CHORUS_RECORDINGS_DIR`, `CHORUS_RECORDINGS_URL`,
    `CHORUS_S3_ENDPOINT_URL`): a directory, or an object store with `directory` as its spool."""

    directory: Path
    url: str = attrs.field(default="")
    endpoint_url: str = ""

    @url.validator
    def _check_url(self, _: attrs.Attribute[str], url: str) -> None:
        if url:
            parse_s3_url(url)


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/prefix` as (bucket, prefix without slashes at its ends); `ValueError`
    for anything else, so that a wrong setting stops the server at start-up."""
    parts = urlsplit(url)
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if parts.scheme != "s3" or not bucket or parts.query or parts.fragment:
        raise ValueError(f"recordings URL {url!r} is not s3://bucket/prefix")
    if not (3 <= len(bucket) <= 63) or not all(c.isalnum() or c in ".-" for c in bucket):
        raise ValueError(f"recordings URL {url!r}: {bucket!r} is not a bucket name")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ValueError(f"recordings URL {url!r}: the prefix has an empty or dot segment")
    return bucket, prefix


class LocalRecordings:
    """Recordings kept in a directory, where they were written; replicas may share it."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    @property
    def directory(self) -> Path:
        return self._directory

    async def check(self) -> None:
        return None  # the disk's free space is the `RecordingPolicy`'s to check

    async def keep(self, path: Path) -> None:
        return None

    async def locate(self, session_id: str) -> Path | StoredObject | None:
        path = self._directory / f"{session_id}.wav"
        return path if await trio.to_thread.run_sync(path.is_file) else None

    async def read(self, session_id: str, start: int, stop: int) -> trio.abc.ReceiveStream:
        return await FileRange.open(self._directory / f"{session_id}.wav", start, stop)

    async def delete(self, session_ids: Sequence[str]) -> None:
        def unlink_all() -> None:
            for session_id in session_ids:
                (self._directory / f"{session_id}.wav").unlink(missing_ok=True)

        await trio.to_thread.run_sync(unlink_all)

    async def recover(self, ended: Collection[str]) -> None:
        return None  # the crash repair fixed the headers where the files are kept

    async def aclose(self) -> None:
        return None


class FileRange(trio.abc.ReceiveStream):
    """A byte range of a local file, read in a worker thread one chunk at a time."""

    def __init__(self, file: BinaryIO, remaining: int) -> None:
        self._file = file
        self._remaining = remaining

    @classmethod
    async def open(cls, path: Path, start: int, stop: int) -> FileRange:
        def opened() -> BinaryIO:
            file = path.open("rb")
            file.seek(start)
            return file

        return cls(await trio.to_thread.run_sync(opened), max(0, stop - start))

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        size = min(self._remaining, max_bytes or CHUNK_BYTES)
        if size <= 0:
            return b""
        chunk = await trio.to_thread.run_sync(self._file.read, size)
        self._remaining = 0 if not chunk else self._remaining - len(chunk)
        return chunk

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._file.close)


def spool_files(directory: Path, ended: Collection[str]) -> list[Path]:
    """The recordings in `directory` whose sessions are in `ended` (blocking)."""
    return sorted(
        directory / name
        for name in os.listdir(directory)
        if name.endswith(".wav") and name.removesuffix(".wav") in ended
    )
