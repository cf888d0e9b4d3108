"""Stream demuxers that lean on FFmpeg: fragmented MP4 (Safari's MediaRecorder) and raw
MP3 / ADTS AAC elementary streams.

Owned by one `StreamingDecoder`, never waits (see `actors.demux`). For MP4 the parser only
walks top-level boxes: it keeps the init segment (`ftyp` + `moov`), holds one `moof` until its
`mdat` is complete, and then lets FFmpeg demux that single fragment from memory (init +
fragment, a few KiB), so memory stays at one fragment and nothing is parsed twice. A plain
(non-fragmented) MP4 cannot be decoded before its end and is refused as a stream; upload it.
Raw streams are cut into frames by FFmpeg's codec parser.
"""

from __future__ import annotations

import io
import struct

import av
import av.error

from actors.decode import UndecodableAudio
from actors.demux import MAX_UNIT_BYTES, TrackInfo

_READ_WHOLE = {b"ftyp", b"moov", b"moof", b"mdat"}


class Mp4FragmentDemuxer:
    """Fragmented MP4 (`ftyp moov (moof mdat)*`) → packets of its first audio track."""

    name = "mp4"

    def __init__(self) -> None:
        self.track: TrackInfo | None = None
        self._buffer = bytearray()
        self._init = b""
        self._moof = b""
        self._skip = 0

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer) + len(self._init) + len(self._moof)

    def flush(self) -> list[bytes]:
        return []  # an unfinished unit at the end of the stream is not audio

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        packets: list[bytes] = []
        position = 0
        while True:
            step = min(self._skip, len(self._buffer) - position)
            self._skip -= step
            position += step
            available = len(self._buffer) - position
            if self._skip or available < 8:
                break
            size, kind = struct.unpack_from(">I4s", self._buffer, position)
            header = 8
            if size == 1:  # a 64-bit size follows the type
                if available < 16:
                    break
                size, header = struct.unpack_from(">Q", self._buffer, position + 8)[0], 16
            if kind == b"mdat" and (self.track is None or not self._moof):
                raise UndecodableAudio(
                    "unsupported_codec",
                    "only fragmented mp4 (moov, then moof/mdat pairs) can be streamed; "
                    "upload a plain mp4 or m4a as a file instead",
                )
            if size < header:
                raise UndecodableAudio(
                    "corrupt", f"corrupt mp4 stream: box {kind!r} of {size} bytes"
                )
            if kind not in _READ_WHOLE:  # styp, sidx, free, mfra, …: nothing to decode
                position, self._skip = position + header, size - header
                continue
            if size > MAX_UNIT_BYTES:
                raise UndecodableAudio("corrupt", f"mp4 box {kind!r} exceeds 4 MiB")
            if available < size:
                break
            packets += self._box(kind, bytes(self._buffer[position : position + size]))
            position += size
        del self._buffer[:position]
        return packets

    def _box(self, kind: bytes, box: bytes) -> list[bytes]:
        if kind == b"moof":
            self._moof = box
            return []
        if kind == b"mdat":
            fragment, self._moof = self._init + self._moof + box, b""
            return _packets(fragment)
        if self.track is None:  # ftyp, moov: the init segment, kept for every fragment
            self._init += box
            if kind == b"moov":
                self.track = self._read_track(self._init)
        return []

    def _read_track(self, init: bytes) -> TrackInfo:
        try:
            with av.open(io.BytesIO(init), "r", metadata_errors="replace") as container:
                if not container.streams.audio:
                    raise UndecodableAudio("no_audio_stream", "the mp4 stream has no audio track")
                codec = container.streams.audio[0].codec_context
                if codec is None:
                    raise UndecodableAudio("unsupported_codec", "the mp4 audio codec is unknown")
                return TrackInfo(codec.name, codec.sample_rate, codec.channels, codec.extradata)
        except av.error.FFmpegError as error:
            raise UndecodableAudio(
                "corrupt", f"corrupt mp4 stream header: {error.strerror}"
            ) from error


def _packets(fragment: bytes) -> list[bytes]:
    try:
        with av.open(io.BytesIO(fragment), "r", metadata_errors="replace") as container:
            stream = container.streams.audio[0]
            return [bytes(packet) for packet in container.demux(stream) if packet.size]
    except av.error.FFmpegError as error:
        raise UndecodableAudio("corrupt", f"corrupt mp4 fragment: {error.strerror}") from error


class RawDemuxer:
    """A raw elementary stream (MP3 frames, optionally after an ID3v2 tag; ADTS AAC) cut into
    frames by FFmpeg's parser for `codec`. An MP3 "Xing"/"Info" frame is dropped, and the
    encoder delay its LAME tag records (plus the decoder's 529) becomes `skip_samples`."""

    def __init__(self, codec: str) -> None:
        self.name = codec
        self.track: TrackInfo | None = None
        self._parser = av.CodecContext.create(codec, "r")
        self._head = b""
        self._skip: int | None = None if codec == "mp3" else 0

    @property
    def buffered_bytes(self) -> int:
        return len(self._head)

    def flush(self) -> list[bytes]:
        return self._parse(None)

    def feed(self, data: bytes) -> list[bytes]:
        if self._skip is None:  # an ID3v2 tag? Its size is "syncsafe": 7 bits a byte.
            self._head += data
            if len(self._head) < 10:
                return []
            data, self._head = self._head, b""
            self._skip = 0
            if data.startswith(b"ID3"):
                syncsafe = data[6:10]
                size = sum(
                    (byte & 0x7F) << (7 * (3 - index)) for index, byte in enumerate(syncsafe)
                )
                self._skip = 10 + size + (10 if data[5] & 0x10 else 0)
        skipped = min(self._skip, len(data))
        self._skip -= skipped
        return self._parse(data[skipped:])

    def _parse(self, data: bytes | None) -> list[bytes]:
        try:
            packets = [bytes(packet) for packet in self._parser.parse(data)]
        except av.error.FFmpegError as error:
            raise UndecodableAudio(
                "corrupt", f"corrupt {self.name} stream: {error.strerror}"
            ) from error
        if self.track is None and packets:
            delay = _lame_delay(packets[0]) if self.name == "mp3" else None
            self.track = TrackInfo(self.name, 0, 0, skip_samples=delay or 0)
            if delay is not None:
                packets.pop(0)
        return packets


def _lame_delay(frame: bytes) -> int | None:
    """If `frame` is an MP3 "Xing"/"Info" tag frame, the decoder output to drop after it (the
    encoder delay LAME records, plus the decoder's own 529 samples); None for an audio frame."""
    tag = max(frame.find(b"Xing", 0, 64), frame.find(b"Info", 0, 64))
    if tag < 0 or len(frame) < tag + 8:
        return None
    flags: int = struct.unpack_from(">I", frame, tag + 4)[0]
    lame = tag + 8 + 4 * (flags & 1) + 4 * (flags >> 1 & 1) + 100 * (flags >> 2 & 1)
    lame += 4 * (flags >> 3 & 1)
    if frame[lame : lame + 4] not in (b"LAME", b"Lavf") or len(frame) < lame + 24:
        return 529
    return ((frame[lame + 21] << 4) | (frame[lame + 22] >> 4)) + 529
