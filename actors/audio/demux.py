"""Incremental demuxers for live audio streams: bytes in, whole codec packets out.

Sans-IO, and owned by one `actors.audio.stream_decoder.StreamingDecoder` (so by one session's
segmenter task). A demuxer never waits for data: `feed` parses what it has, keeps only the
unfinished tail (one element, page or box, bounded by `MAX_UNIT_BYTES`), and returns the
packets that tail did not hold back. Elements it need not read (cues, tags, video tracks) are
skipped as they stream past, never buffered. Malformed input raises `UndecodableAudio`.

`UnitDemuxer` is that feed loop, written once: a container's demuxer says only how to read the
one unit (page, element, box, chunk) at the front of what it holds. The Ogg, WAV, Matroska and
MP4 demuxers stand on it; the raw MP3 / AAC one hands its bytes to FFmpeg's parser instead.

This module holds the error every decoding path raises (`UndecodableAudio`; its `kind` lets the
HTTP layer pick 400 or 415), sniffing, the shared `TrackInfo`, the `UnitDemuxer` base, and the
Ogg and WAV demuxers; Matroska / WebM lives in `actors.audio.demux_matroska`, fragmented MP4
and raw MP3 / AAC in `actors.audio.demux_ffmpeg`.
"""

from __future__ import annotations

import math
import struct
from typing import Literal, NamedTuple, Protocol

import attrs

UndecodableKind = Literal[
    "empty", "not_audio", "no_audio_stream", "unsupported_codec", "corrupt", "truncated", "too_long"
]


class UndecodableAudio(ValueError):
    """The input is not audio we can decode; `reason` says what was wrong, for the user."""

    def __init__(self, kind: UndecodableKind, reason: str) -> None:
        super().__init__(reason)
        self.kind: UndecodableKind = kind
        self.reason = reason


# The largest single element / page / box a demuxer will hold while it waits for the rest.
MAX_UNIT_BYTES = 4 * 1024 * 1024
# Sample rates a header may declare. Anything else is a decoding bomb (a 1 kB WAV declaring
# 1 Hz decodes to 16 M samples at 16 kHz) or a broken file, never a recording.
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192_000


def checked_rate(rate: float, what: str) -> int:
    """`rate` as an int when it is a real recording's rate; `UndecodableAudio` otherwise."""
    if not (math.isfinite(rate) and MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE):
        raise UndecodableAudio(
            "corrupt",
            f"the {what} declares a sample rate of {rate:g} Hz; "
            f"{MIN_SAMPLE_RATE // 1000} to {MAX_SAMPLE_RATE // 1000} kHz is accepted",
        )
    return int(rate)


@attrs.frozen
class TrackInfo:
    """How to decode the packets of the one audio track a demuxer follows."""

    codec: str  # FFmpeg decoder name
    sample_rate: int
    channels: int
    extradata: bytes | None = None
    skip_samples: int = 0  # decoder output to drop at the start (MP3 encoder delay)


class Demuxer(Protocol):
    name: str
    track: TrackInfo | None

    def feed(self, data: bytes) -> list[bytes]:
        """Take more of the stream; return the audio packets it completes."""
        ...

    def flush(self) -> list[bytes]:
        """End of stream: return any packet held back waiting for more."""
        ...

    @property
    def buffered_bytes(self) -> int:
        """Bytes held while waiting for the rest of an element, page or box."""
        ...


class Unit(NamedTuple):
    """What reading one unit at the front of a `UnitDemuxer`'s buffer came to."""

    end: int  # where the next unit starts in the buffer
    packets: list[bytes]  # the audio packets this unit completes
    skip: int = 0  # bytes after `end` to pass over as they stream past, never buffered


class UnitDemuxer:
    """The feed loop every container demuxer shares: take the bytes, read whole units from the
    front while they are complete, pass over what a unit says to skip (even bytes that have not
    arrived yet), and keep only the unfinished tail. A subclass says how to read one unit."""

    name: str

    def __init__(self) -> None:
        self.track: TrackInfo | None = None
        self._buffer = bytearray()
        self._offset = 0  # where `_buffer` starts in the stream
        self._skip = 0

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

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
            unit = None if self._skip else self._unit(position)
            if unit is None:
                break
            position, self._skip = unit.end, unit.skip
            packets += unit.packets
        del self._buffer[:position]
        self._offset += position
        return packets

    def _unit(self, position: int) -> Unit | None:
        """Read the unit at `position` in `_buffer` (at `_offset + position` in the stream);
        None while it is incomplete. Raises `UndecodableAudio` for a malformed one."""
        raise NotImplementedError


def sniff_container(head: bytes) -> str | None:
    """Name the container that `head` (the first 12 or more bytes) starts, or None."""
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"fLaC"):
        return "flac"
    if head[4:8] in (b"ftyp", b"moov", b"moof", b"styp", b"free", b"mdat"):
        return "mp4"
    if head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head.startswith(b"ID3"):
        return "mp3"
    if len(head) >= 3 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0 and head[2] >> 2 & 15 < 13:
        return "aac"  # ADTS with a valid sampling-frequency index
    if len(head) >= 3 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and _mpeg_audio(head):
        return "mp3"
    return None


def _mpeg_audio(head: bytes) -> bool:
    """An MPEG audio frame header: no reserved version, layer, bitrate or rate."""
    version, layer = head[1] >> 3 & 3, head[1] >> 1 & 3
    bitrate, rate = head[2] >> 4, head[2] >> 2 & 3
    return version != 1 and layer != 0 and bitrate not in (0, 15) and rate != 3


def opus_track(opus_head: bytes) -> TrackInfo:
    """TrackInfo for an Opus stream from its `OpusHead` (RFC 7845 §5.1)."""
    if len(opus_head) < 19 or not opus_head.startswith(b"OpusHead"):
        raise UndecodableAudio("corrupt", "the Opus stream has no valid OpusHead header")
    return TrackInfo("opus", 48000, opus_head[9], opus_head)  # FFmpeg applies its pre-skip


def xiph_lace(packets: list[bytes]) -> bytes:
    """Vorbis headers in the Xiph-laced form FFmpeg takes as extradata."""
    sizes = b"".join(b"\xff" * (len(p) // 255) + bytes([len(p) % 255]) for p in packets[:-1])
    return bytes([len(packets) - 1]) + sizes + b"".join(packets)


def vorbis_track(headers: list[bytes]) -> TrackInfo:
    identification = headers[0]
    if len(identification) < 30 or not identification.startswith(b"\x01vorbis"):
        raise UndecodableAudio("corrupt", "the Vorbis stream has no valid identification header")
    channels, rate = struct.unpack_from("<BI", identification, 11)
    return TrackInfo("vorbis", checked_rate(rate, "Vorbis header"), channels, xiph_lace(headers))


class OggDemuxer(UnitDemuxer):
    """Ogg pages (RFC 3533) → packets of the first Opus or Vorbis logical stream."""

    name = "ogg"

    def __init__(self) -> None:
        super().__init__()
        self._serial: int | None = None
        self._partial = b""
        self._headers: list[bytes] = []
        self._codec: str | None = None
        self._others: list[bytes] = []

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer) + len(self._partial)

    def _unit(self, position: int) -> Unit | None:
        if len(self._buffer) - position < 27:
            return None
        if self._buffer[position : position + 4] != b"OggS":
            raise UndecodableAudio("corrupt", "corrupt ogg stream: lost page sync")
        flags, serial, count = struct.unpack_from("<B8xI8xB", self._buffer, position + 5)
        lacing = self._buffer[position + 27 : position + 27 + count]
        end = position + 27 + count + sum(lacing)
        if len(lacing) < count or end > len(self._buffer):
            return None
        body = bytes(self._buffer[position + 27 + count : end])
        return Unit(end, self._page(flags, serial, bytes(lacing), body))

    def _page(self, flags: int, serial: int, lacing: bytes, body: bytes) -> list[bytes]:
        if self._serial is None:
            if not flags & 0x02:  # the first page after all beginning-of-stream pages
                if self._others:
                    raise UndecodableAudio(
                        "unsupported_codec",
                        f"the ogg stream holds no Opus or Vorbis audio ({self._others[0]!r}…)",
                    )
                raise UndecodableAudio("corrupt", "the ogg stream does not start at its beginning")
            if body.startswith(b"OpusHead"):
                self._codec = "opus"
            elif body.startswith(b"\x01vorbis"):
                self._codec = "vorbis"
            else:
                self._others.append(body[:8])  # another logical stream (FLAC, video): not ours
                return []
            self._serial = serial
        if serial != self._serial:
            return []
        packets: list[bytes] = []
        piece = self._partial if flags & 0x01 else b""
        offset = 0
        for size in lacing:
            piece += body[offset : offset + size]
            offset += size
            if size < 255:
                packets.append(piece)
                piece = b""
        self._partial = piece
        if len(self._partial) > MAX_UNIT_BYTES:
            raise UndecodableAudio("corrupt", "corrupt ogg stream: a packet exceeds 4 MiB")
        return self._audio(packets)

    def _audio(self, packets: list[bytes]) -> list[bytes]:
        if self.track is not None:
            return packets
        wanted = 2 if self._codec == "opus" else 3  # OpusHead+OpusTags, or Vorbis' three headers
        while packets and len(self._headers) < wanted:
            self._headers.append(packets.pop(0))
        if len(self._headers) == wanted:
            head = self._headers
            self.track = opus_track(head[0]) if self._codec == "opus" else vorbis_track(head)
        return packets


class WavDemuxer(UnitDemuxer):
    """RIFF/WAVE: the `fmt ` chunk, then the `data` chunk's PCM in whole sample frames.
    A `data` size of 0 or 0xFFFFFFFF (a recorder that streams) means "until the end"."""

    name = "wav"

    def __init__(self) -> None:
        super().__init__()
        self._stage = "riff"
        self._block = 1
        self._data_left: int | None = None
        self.data_bytes: int | None = None  # what the header declares, if it says

    @property
    def declared_seconds(self) -> float | None:
        """The duration the header declares (None when it does not say, or is not read yet)."""
        if self.track is None or self.data_bytes is None:
            return None
        return self.data_bytes / self._block / self.track.sample_rate

    def _unit(self, position: int) -> Unit | None:
        available = len(self._buffer) - position
        if self._stage == "riff":
            if available < 12:
                return None
            self._stage = "chunks"
            return Unit(position + 12, [])
        if self._stage == "chunks":
            return self._chunk(position, available)
        if self._data_left == 0:  # trailing chunks (LIST, id3) are not audio
            return Unit(len(self._buffer), []) if available else None
        usable = available - available % self._block
        if self._data_left is not None:
            usable = min(usable, self._data_left)
            self._data_left -= usable
        if not usable:
            return None
        return Unit(position + usable, [bytes(self._buffer[position : position + usable])])

    def _chunk(self, position: int, available: int) -> Unit | None:
        """The header of the chunk at `position`: `data` starts the audio, `fmt ` is read, any
        other (LIST, fact, …) is skipped as it streams past."""
        if available < 8:
            return None
        chunk_id, size = struct.unpack_from("<4sI", self._buffer, position)
        if chunk_id == b"data":
            if self.track is None:
                raise UndecodableAudio("corrupt", "the wav data chunk comes before fmt ")
            self._stage = "data"
            self._data_left = None if size in (0, 0xFFFFFFFF) else size
            self.data_bytes = self._data_left
            return Unit(position + 8, [])
        if chunk_id != b"fmt ":
            return Unit(position + 8, [], skip=size + size % 2)
        if size > 4096:
            raise UndecodableAudio("corrupt", "the wav fmt chunk is implausibly large")
        if available < 8 + size:
            return None
        self.track, self._block = _wav_format(
            bytes(self._buffer[position + 8 : position + 8 + size])
        )
        return Unit(position + 8 + size, [], skip=size % 2)  # the pad byte may not be here yet


_WAV_CODECS = {
    (1, 8): "pcm_u8",
    (1, 16): "pcm_s16le",
    (1, 24): "pcm_s24le",
    (1, 32): "pcm_s32le",
    (3, 32): "pcm_f32le",
    (3, 64): "pcm_f64le",
}


def _wav_format(fmt: bytes) -> tuple[TrackInfo, int]:
    """TrackInfo and bytes per sample frame from a `fmt ` chunk's body."""
    if len(fmt) < 16:
        raise UndecodableAudio("corrupt", "the wav fmt chunk is too short")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == 0xFFFE and len(fmt) >= 26:
        tag = struct.unpack_from("<H", fmt, 24)[0]  # WAVE_FORMAT_EXTENSIBLE's sub-format
    codec = _WAV_CODECS.get((tag, bits))
    if codec is None or channels == 0:
        raise UndecodableAudio(
            "unsupported_codec", f"wav format {tag} with {bits}-bit samples is not supported"
        )
    return TrackInfo(codec, checked_rate(rate, "wav header"), channels), channels * bits // 8
