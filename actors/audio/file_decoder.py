"""Any audio a user has → 16 kHz mono float32: whole files (uploads) decoded with PyAV.

`decode_file` is synchronous and CPU-bound; it runs in a worker thread, normally through
`decode_file_async` (`trio.to_thread.run_sync`, never abandoned on cancel, so the thread and
the FFmpeg handles it owns always finish and close before the caller moves on). It decodes
from memory (`io.BytesIO`) or straight from a path: no temporary files exist at any point.

FFmpeg sees only what `sniff_container` names by its first bytes, opened with that container's
own demuxer (`FILE_FORMATS`, passed as `format=`), never FFmpeg's probe, and with no network or
file protocol it could reach from inside the data: FFmpeg's playlist, SDP, concat and image
demuxers open sockets and local files named by the "audio" (issue 21: an SDP upload bound UDP
ports, an `ffconcat` one read another tenant's recording), so anything else is refused as
`not_audio` before FFmpeg reads a byte.

Every way bytes can fail to be audio ends in `UndecodableAudio(kind, reason)`; `kind` lets the
HTTP layer choose a status (`not_audio`, `no_audio_stream`, `unsupported_codec` → 415; `empty`,
`corrupt`, `truncated` → 400) and `reason` is a sentence for the user. Other exceptions are bugs.

Decoded frames become mono at the target rate through `actors.audio.resample.FrameResampler`,
which `actors.audio.stream_decoder.StreamingDecoder` uses too, so a file and the same file
streamed come out alike.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import BinaryIO

import attrs
import av
import av.error
import numpy as np
import trio

from actors.audio.demux import (
    UndecodableAudio,
    UndecodableKind,
    WavDemuxer,
    checked_rate,
    sniff_container,
)
from actors.audio.resample import EMPTY, FrameResampler
from actors.model.port import SAMPLE_RATE, Samples

__all__ = [
    "FILE_FORMATS",
    "AudioInfo",
    "AudioSource",
    "UndecodableAudio",
    "UndecodableKind",
    "decode_file",
    "decode_file_async",
    "probe_audio",
]

AudioSource = bytes | bytearray | memoryview | Path

# A file is "truncated" when its header promises clearly more audio than could be decoded.
_TRUNCATED_FRACTION = 0.9
_TRUNCATED_SLACK_S = 0.5
# Isolated bad packets are skipped (as FFmpeg's own tools do); this share of them is not.
_MAX_BAD_PACKET_SHARE = 0.1
_HEAD_BYTES = 64 * 1024

# The containers a file may be (by `sniff_container`'s name) → the FFmpeg demuxer for each.
FILE_FORMATS = {
    "wav": "wav",
    "flac": "flac",
    "mp3": "mp3",
    "aac": "aac",
    "ogg": "ogg",
    "webm": "matroska",
    "mp4": "mov",
    "aiff": "aiff",
}
_NAMES = {demuxer: name for name, demuxer in FILE_FORMATS.items()}
# FFmpeg's protocols a demuxer may open: none from memory, the file itself from a path.
_NO_PROTOCOLS = {"protocol_whitelist": "none"}
_FILE_ONLY = {"protocol_whitelist": "file"}


@attrs.frozen
class AudioInfo:
    """What `probe_audio` learns from a container's header without decoding it."""

    container: str
    codec: str
    sample_rate: int
    channels: int
    duration_s: float | None


def _open(data: AudioSource | BinaryIO) -> tuple[av.container.InputContainer, bytes]:
    """Open `data` with the FFmpeg demuxer of the container its first bytes name; also return
    those bytes (for wav headers). Anything `sniff_container` does not name never reaches
    FFmpeg."""
    source: str | BinaryIO
    if isinstance(data, Path):
        if not data.is_file() or data.stat().st_size == 0:
            raise UndecodableAudio("empty", f"{data.name} is empty or not a file")
        with data.open("rb") as file:
            head = file.read(_HEAD_BYTES)
        source = str(data)
    elif isinstance(data, bytes | bytearray | memoryview):
        if len(data) == 0:
            raise UndecodableAudio("empty", "the audio file is empty (0 bytes)")
        head = bytes(data[:_HEAD_BYTES])
        source = io.BytesIO(data)
    else:  # an open binary file (an upload's spooled temporary file): read in place
        data.seek(0)
        head = data.read(_HEAD_BYTES)
        data.seek(0)
        if not head:
            raise UndecodableAudio("empty", "the audio file is empty (0 bytes)")
        source = data
    name = _sniffed(head)
    if name is None:
        raise UndecodableAudio(
            "not_audio",
            f"not an audio file this server reads: it starts with {head[:12]!r}; send "
            + ", ".join(sorted(FILE_FORMATS)),
        )
    options = _FILE_ONLY if isinstance(source, str) else _NO_PROTOCOLS
    try:
        container = av.open(
            source, "r", format=FILE_FORMATS[name], options=options, metadata_errors="replace"
        )
    except av.error.FFmpegError as error:
        raise UndecodableAudio(
            "truncated" if isinstance(error, av.error.EOFError) else "corrupt",
            f"the {name} file is truncated or corrupt: {error.strerror}",
        ) from error
    return container, head


def _sniffed(head: bytes) -> str | None:
    """`sniff_container`, looking past an ID3v2 tag, which may stand before MP3, ADTS AAC or
    FLAC (FFmpeg skips the tag before any demuxer reads)."""
    name = sniff_container(head)
    if name != "mp3" or not head.startswith(b"ID3") or len(head) < 10:
        return name
    size = sum((byte & 0x7F) << (7 * (3 - index)) for index, byte in enumerate(head[6:10]))
    after = 10 + size + (10 if head[5] & 0x10 else 0)  # the header, the tag, its footer
    behind = sniff_container(head[after:]) if len(head) >= after + 12 else None
    return behind if behind in ("aac", "flac") else name


def _name(container: av.container.InputContainer) -> str:
    """The container's name as `sniff_container` gives it (webm, mp4, …)."""
    return _NAMES.get(container.format.name, container.format.name)


def _audio_stream(container: av.container.InputContainer) -> av.audio.AudioStream:
    if not container.streams.audio:
        found = ", ".join(stream.type for stream in container.streams) or "no streams"
        raise UndecodableAudio(
            "no_audio_stream", f"the {_name(container)} file has no audio stream ({found})"
        )
    stream = container.streams.audio[0]
    if stream.codec_context is None or stream.codec_context.name in ("", "none"):
        raise UndecodableAudio("unsupported_codec", "the audio stream's codec is not supported")
    return stream


def _declared_seconds(
    container: av.container.InputContainer, stream: av.audio.AudioStream, head: bytes
) -> float | None:
    if container.format.name == "wav":  # FFmpeg goes by the bytes present, not the header
        wav = WavDemuxer()
        try:
            wav.feed(head)
        except UndecodableAudio:
            return None
        return wav.declared_seconds
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def probe_audio(data: AudioSource) -> AudioInfo:
    """Read the header only: container, codec, rate, channels and declared duration (None when
    the file does not say, as with a browser's live webm). Raises `UndecodableAudio`."""
    container, head = _open(data)
    with container:
        stream = _audio_stream(container)
        return AudioInfo(
            container=_name(container),
            codec=stream.codec_context.name,
            sample_rate=stream.codec_context.sample_rate,
            channels=stream.codec_context.channels,
            duration_s=_declared_seconds(container, stream, head),
        )


class FileDecoder:
    """A whole file decoded piece by piece, so that memory stays flat for any length.

    Blocking: every call runs in a worker thread (one at a time; `transcribe_file` owns one
    per upload and drives it with `trio.to_thread.run_sync`). `read(seconds)` returns the next
    piece of at least `seconds` of audio at `target_rate`, or None at the end, where the checks
    on the whole file are made (nothing decoded, too many bad packets, a header that promised
    more). Past `max_seconds` of decoded audio it raises `too_long` at once.
    """

    def __init__(
        self,
        data: AudioSource | BinaryIO,
        *,
        target_rate: int = SAMPLE_RATE,
        max_seconds: float | None = None,
    ) -> None:
        self.target_rate = target_rate
        self.max_seconds = max_seconds
        self._container, head = _open(data)
        try:
            self._stream = _audio_stream(self._container)
            name = _name(self._container)
            checked_rate(self._stream.codec_context.sample_rate or SAMPLE_RATE, f"{name} file")
            self.declared_s = _declared_seconds(self._container, self._stream, head)
        except BaseException:
            self._container.close()
            raise
        self.codec = self._stream.codec_context.name
        self.samples_out = 0
        self._packets_seen = 0
        self._bad_packets = 0
        self._decoded = 0
        self._resampler = FrameResampler(target_rate)
        self._packets = self._container.demux(self._stream)
        self._finished = False

    def close(self) -> None:
        self._container.close()

    def read(self, seconds: float) -> Samples | None:
        if self._finished:
            return None
        wanted = max(1, int(seconds * self.target_rate))
        pieces: list[Samples] = []
        got = 0
        while got < wanted:
            frames = self._next_frames()
            if frames is None:
                pieces.append(self._resampler.finish())
                got += len(pieces[-1])
                self._finish(self.samples_out + got)
                break
            for frame in frames:
                self._decoded += frame.samples
                pieces.append(self._resampler.push(frame))
                got += len(pieces[-1])
            limit = self.max_seconds
            if limit is not None and self.samples_out + got > limit * self.target_rate:
                raise _too_long(limit)
        self.samples_out += got
        return np.concatenate(pieces) if pieces else EMPTY

    def _next_frames(self) -> list[av.AudioFrame] | None:
        """The frames of the next packet (none for a bad one); None at the end."""
        try:
            packet = next(self._packets)
            self._packets_seen += packet.size > 0
            try:
                return list(packet.decode())
            except av.error.InvalidDataError:
                self._bad_packets += 1
                return []
        except StopIteration:
            return None
        except av.error.FFmpegError as error:
            if not self._decoded:
                raise UndecodableAudio(
                    "corrupt", f"corrupt {_name(self._container)} data: {error.strerror}"
                ) from error
            return None  # damage after audio: keep what was decoded (as FFmpeg's tools do)

    def _finish(self, total: int) -> None:
        self._finished = True
        codec, packets, bad = self.codec, self._packets_seen, self._bad_packets
        if not self._decoded:
            raise UndecodableAudio(
                "corrupt" if packets else "truncated",
                f"no {codec} audio could be decoded"
                + (f" ({bad} of {packets} packets corrupt)" if packets else " (no packets)"),
            )
        if bad > _MAX_BAD_PACKET_SHARE * packets:
            raise UndecodableAudio(
                "corrupt", f"corrupt {codec} stream: {bad} of {packets} packets failed"
            )
        seconds = total / self.target_rate
        declared = self.declared_s
        if declared is not None and seconds < declared * _TRUNCATED_FRACTION - _TRUNCATED_SLACK_S:
            raise UndecodableAudio(
                "truncated",
                f"the file is truncated or damaged: its header declares {declared:.1f} s of audio "
                f"but only {seconds:.1f} s could be decoded",
            )


def decode_file(
    data: AudioSource | BinaryIO,
    *,
    target_rate: int = SAMPLE_RATE,
    max_seconds: float | None = None,
) -> Samples:
    """Decode a whole file (webm, ogg, mp3, m4a, flac, wav, … at 8-192 kHz, any channel count)
    to float32 mono at `target_rate`. Blocking: call it from a worker thread. For long files
    use `FileDecoder`, which holds one piece at a time.

    A file that decodes to more than `max_seconds` raises `too_long` as soon as it passes the
    limit (what a header declares is not trusted either way)."""
    decoder = FileDecoder(data, target_rate=target_rate, max_seconds=max_seconds)
    try:
        pieces = []
        while (piece := decoder.read(60.0)) is not None:
            pieces.append(piece)
    finally:
        decoder.close()
    return np.concatenate(pieces) if pieces else EMPTY


def _too_long(max_seconds: float) -> UndecodableAudio:
    return UndecodableAudio(
        "too_long",
        f"the file is too long: it decodes to more than the {max_seconds:g} s of audio this "
        "server accepts per file (CHORUS_MAX_UPLOAD_S)",
    )


async def decode_file_async(
    data: AudioSource,
    *,
    target_rate: int = SAMPLE_RATE,
    max_seconds: float | None = None,
    limiter: trio.CapacityLimiter | None = None,
) -> Samples:
    """`decode_file` in a worker thread; `limiter` bounds how many decode at once."""
    return await trio.to_thread.run_sync(
        functools.partial(decode_file, data, target_rate=target_rate, max_seconds=max_seconds),
        abandon_on_cancel=False,
        limiter=limiter,
    )
