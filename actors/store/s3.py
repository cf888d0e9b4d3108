"""Recordings kept in an S3-compatible object store (`CHORUS_RECORDINGS_URL=s3://bucket/prefix`).

A session's recording is written to the spool (`RecordingsConfig.directory`, this replica's own
disk) as with a directory; `keep()`, when its session ends, uploads the finished WAV to
`<prefix>/<session_id>.wav` (boto3's transfer: multipart above 8 MiB) and then removes the
spool file. Any replica reads it back with HEAD (its size) and ranged GETs, chunk by chunk
(`read()`), never whole. Deleting a session deletes the object.

Ownership: `S3Recordings` holds one boto3 client (thread-safe; made in a worker thread by
`open_s3_recordings`, closed by `aclose()`) and a `CapacityLimiter` that bounds the worker
threads its blocking calls run in (`trio.to_thread.run_sync`, never abandoned on cancel: an
upload or a read in progress finishes first); a multipart upload also uses up to 4 threads of
boto3's transfer manager, joined before the upload returns. boto3 reads the credentials and
the region as it always does (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
`AWS_REGION`, `~/.aws`, instance roles); the endpoint is `CHORUS_S3_ENDPOINT_URL`, or
`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, and with one the bucket is named in the path, as
servers other than AWS's expect.

Failures are `RecordingsUnreachable` (an `OSError`), never a dead session: `check()` (a HEAD on
the bucket, its answer reused for `CHECK_EVERY_S`) lets `open_recording` refuse up front, and
the session goes on unrecorded (`service/session/recorder.py`); an upload that fails leaves the
finished file in the spool, where this replica still serves it and start-up `recover()` uploads
it again (with what a crash left there, after the crash repair fixed its header).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Collection, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any, TypeVar

import boto3
import trio
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from actors.store.recording import repair_wav
from actors.store.recordings import (
    CHUNK_BYTES,
    LocalRecordings,
    RecordingsConfig,
    RecordingsUnreachable,
    StoredObject,
    parse_s3_url,
    spool_files,
)

log = logging.getLogger("chorus.store")
T = TypeVar("T")
THREADS = 8  # blocking S3 calls at once (reads of every response, uploads, deletes)
CHECK_EVERY_S = 30.0  # how long `check()`'s answer holds
DELETE_BATCH = 1000  # the most keys one DeleteObjects takes
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
_TRANSFER = TransferConfig(
    multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=4
)


async def open_s3_recordings(config: RecordingsConfig) -> S3Recordings:
    """The object store `config.url` names, with `config.directory` as its spool."""
    bucket, prefix = parse_s3_url(config.url)
    endpoint = (
        config.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    client = await trio.to_thread.run_sync(_client, endpoint or None)
    return S3Recordings(LocalRecordings(config.directory), bucket, prefix, client)


def _client(endpoint_url: str | None) -> Any:
    config = Config(
        connect_timeout=5,
        read_timeout=30,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        # servers other than AWS's may not take the newer default checksums
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


class S3Recordings:
    """A `RecordingStore` over one bucket and prefix; see the module docstring."""

    def __init__(
        self,
        spool: LocalRecordings,
        bucket: str,
        prefix: str,
        client: Any,
        *,
        check_every_s: float = CHECK_EVERY_S,
    ) -> None:
        self._spool = spool
        self.bucket, self.prefix = bucket, prefix
        self._client = client
        self._limiter = trio.CapacityLimiter(THREADS)
        self._check_every_s = check_every_s
        self._checked: tuple[float, str] | None = None  # when, and why it failed ("": it did not)

    @property
    def directory(self) -> Path:
        return self._spool.directory

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, session_id: str) -> str:
        return f"{self.prefix}/{session_id}.wav" if self.prefix else f"{session_id}.wav"

    async def _call(self, call: Callable[[], T]) -> T:
        """`call` in a worker thread, its boto errors as `RecordingsUnreachable`."""
        try:
            return await trio.to_thread.run_sync(call, limiter=self._limiter)
        except (ClientError, BotoCoreError, Boto3Error) as error:
            raise RecordingsUnreachable(f"{self.where}: {error}") from error

    async def check(self) -> None:
        now = trio.current_time()
        if self._checked is None or now - self._checked[0] >= self._check_every_s:
            failure = ""
            try:
                await self._call(functools.partial(self._client.head_bucket, Bucket=self.bucket))
            except RecordingsUnreachable as error:
                failure = f"{error} (check the credentials, the endpoint and the bucket)"
            self._checked = (now, failure)
        if self._checked[1]:
            raise RecordingsUnreachable(self._checked[1])

    async def keep(self, path: Path) -> None:
        upload = functools.partial(
            self._client.upload_file,
            str(path),
            self.bucket,
            self.key(path.stem),
            ExtraArgs={"ContentType": "audio/wav"},
            Config=_TRANSFER,
        )
        await self._call(upload)
        await trio.to_thread.run_sync(path.unlink, True)

    async def locate(self, session_id: str) -> Path | StoredObject | None:
        local = await self._spool.locate(session_id)  # an upload that failed, or is retried
        if local is not None:
            return local

        def head() -> dict[str, Any] | None:
            try:
                answer: dict[str, Any] = self._client.head_object(
                    Bucket=self.bucket, Key=self.key(session_id)
                )
                return answer
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in _MISSING:
                    return None
                raise

        found = await self._call(head)
        if found is None:
            return None
        modified = found["LastModified"].astimezone(UTC)  # botocore's own tzutc otherwise
        return StoredObject(found["ContentLength"], found["ETag"], modified)

    async def read(self, session_id: str, start: int, stop: int) -> trio.abc.ReceiveStream:
        if await self._spool.locate(session_id) is not None:
            return await self._spool.read(session_id, start, stop)
        get = functools.partial(
            self._client.get_object,
            Bucket=self.bucket,
            Key=self.key(session_id),
            Range=f"bytes={start}-{stop - 1}",
        )
        return _ObjectBody((await self._call(get))["Body"], self._call)

    async def delete(self, session_ids: Sequence[str]) -> None:
        await self._spool.delete(session_ids)
        for first in range(0, len(session_ids), DELETE_BATCH):
            keys = [{"Key": self.key(id_)} for id_ in session_ids[first : first + DELETE_BATCH]]
            answer = await self._call(
                functools.partial(
                    self._client.delete_objects,
                    Bucket=self.bucket,
                    Delete={"Objects": keys, "Quiet": True},
                )
            )
            if errors := answer.get("Errors"):
                error = errors[0]
                raise RecordingsUnreachable(
                    f"{self.where}: {len(errors)} not deleted, {error.get('Key')}: "
                    f"{error.get('Code')} {error.get('Message')}"
                )

    async def recover(self, ended: Collection[str]) -> None:
        paths = await trio.to_thread.run_sync(spool_files, self.directory, ended)
        kept = 0
        for path in paths:
            try:
                if await trio.to_thread.run_sync(repair_wav, path) is None:
                    log.warning("%s is not a recording: left in the spool", path)
                    continue
                await self.keep(path)
                kept += 1
            except OSError as error:
                log.error("recording %s stays in the spool, not in %s: %s", path, self.where, error)
        if kept:
            log.warning("uploaded %d recordings left in the spool to %s", kept, self.where)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._client.close)


class _ObjectBody(trio.abc.ReceiveStream):
    """An object's body (a ranged GET's), read in worker threads one chunk at a time."""

    def __init__(self, body: Any, call: Callable[[Callable[[], Any]], Any]) -> None:
        self._body = body
        self._call = call

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        read = functools.partial(self._body.read, max_bytes or CHUNK_BYTES)
        chunk: bytes = await self._call(read)
        return chunk

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._body.close)
