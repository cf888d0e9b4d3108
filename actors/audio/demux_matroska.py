"""Incremental Matroska / WebM demuxer: what a browser's MediaRecorder streams.

Owned by one `StreamingDecoder`, sans-IO, never waits (an `actors.audio.demux.UnitDemuxer`). The
parser walks EBML elements flat: it steps *into* the Segment and each Cluster (their sizes are
often "unknown" in a live recording, so it never needs their end), reads Tracks, SimpleBlocks
and BlockGroups whole (each bounded by `MAX_UNIT_BYTES`), and skips everything else as it
streams past. Only the first audio track is followed; its blocks' frames are the packets
returned.
"""

from __future__ import annotations

import struct

from actors.audio.demux import (
    MAX_UNIT_BYTES,
    TrackInfo,
    Unit,
    UnitDemuxer,
    checked_rate,
    opus_track,
)
from actors.audio.file_decoder import UndecodableAudio

SEGMENT = 0x18538067
CLUSTER = 0x1F43B675
TRACKS = 0x1654AE6B
TRACK_ENTRY = 0xAE
TRACK_NUMBER = 0xD7
TRACK_TYPE = 0x83
CODEC_ID = 0x86
CODEC_PRIVATE = 0x63A2
AUDIO = 0xE1
SAMPLING_FREQUENCY = 0xB5
CHANNELS = 0x9F
BIT_DEPTH = 0x6264
SIMPLE_BLOCK = 0xA3
BLOCK_GROUP = 0xA0
BLOCK = 0xA1

_ENTER = {SEGMENT, CLUSTER}
_READ_WHOLE = {TRACKS, SIMPLE_BLOCK, BLOCK_GROUP}
_UNKNOWN = -1
_AUDIO_TRACK = 2


def _vint(data: bytes | bytearray, position: int, *, keep_marker: bool) -> tuple[int, int] | None:
    """An EBML variable-length integer at `position`: (value, length), or None if incomplete.
    A size whose value bits are all ones is "unknown" (`_UNKNOWN`)."""
    if position >= len(data):
        return None
    first = data[position]
    length = 9 - first.bit_length() if first else 9
    if length > 8 or (keep_marker and length > 4):
        raise UndecodableAudio("corrupt", "corrupt webm stream: invalid EBML element header")
    if position + length > len(data):
        return None
    value = first if keep_marker else first & (0xFF >> length)
    for byte in data[position + 1 : position + length]:
        value = (value << 8) | byte
    if not keep_marker and value == (1 << (7 * length)) - 1:
        return _UNKNOWN, length
    return value, length


def _children(data: bytes) -> dict[int, list[bytes]]:
    """The child elements of a master element whose whole body is in `data`."""
    found: dict[int, list[bytes]] = {}
    position = 0
    while position < len(data):
        element = _vint(data, position, keep_marker=True)
        size = _vint(data, position + element[1], keep_marker=False) if element else None
        if element is None or size is None or size[0] == _UNKNOWN:
            raise UndecodableAudio("corrupt", "corrupt webm stream: truncated element")
        start = position + element[1] + size[1]
        if start + size[0] > len(data):
            raise UndecodableAudio("corrupt", "corrupt webm stream: element overruns its parent")
        found.setdefault(element[0], []).append(data[start : start + size[0]])
        position = start + size[0]
    return found


def _uint(values: list[bytes] | None, default: int) -> int:
    return int.from_bytes(values[0], "big") if values else default


def _track_info(entry: dict[int, list[bytes]]) -> TrackInfo:
    codec_id = entry.get(CODEC_ID, [b""])[0].rstrip(b"\0").decode("ascii", "replace")
    private = entry.get(CODEC_PRIVATE, [None])[0]
    audio = _children(entry[AUDIO][0]) if AUDIO in entry else {}
    frequency = audio.get(SAMPLING_FREQUENCY, [b""])[0]
    rate = 8000  # the Matroska default
    if len(frequency) in (4, 8):
        declared = struct.unpack(">f" if len(frequency) == 4 else ">d", frequency)[0]
        rate = checked_rate(declared, "webm SamplingFrequency")
    channels = _uint(audio.get(CHANNELS), 1)
    bits = _uint(audio.get(BIT_DEPTH), 16)
    if codec_id == "A_OPUS":
        return opus_track(private or b"")
    codec = {
        "A_VORBIS": "vorbis",
        "A_FLAC": "flac",
        "A_MPEG/L3": "mp3",
        "A_MPEG/L2": "mp2",
        "A_PCM/INT/LIT": {8: "pcm_u8", 16: "pcm_s16le", 24: "pcm_s24le", 32: "pcm_s32le"}.get(bits),
        "A_PCM/FLOAT/IEEE": {32: "pcm_f32le", 64: "pcm_f64le"}.get(bits),
    }.get(codec_id, "aac" if codec_id.startswith("A_AAC") else None)
    if codec is None or (codec == "vorbis" and not private):
        raise UndecodableAudio(
            "unsupported_codec", f"webm audio codec {codec_id!r} is not supported"
        )
    return TrackInfo(codec, rate, channels, private)


def _laced_frames(block: bytes, start: int, lacing: int) -> list[bytes]:
    """Split a block's payload (from `start`) into its frames (Matroska §10.3 lacing)."""
    if lacing == 0:
        return [block[start:]]
    count = block[start] + 1
    position = start + 1
    sizes: list[int] = []
    if lacing == 1:  # Xiph: each size as a run of 255s and a final byte
        for _ in range(count - 1):
            size = 0
            while block[position] == 255:
                size, position = size + 255, position + 1
            sizes.append(size + block[position])
            position += 1
    elif lacing == 3:  # EBML: first size, then signed differences
        for index in range(count - 1):
            value = _vint(block, position, keep_marker=False)
            if value is None:
                raise UndecodableAudio("corrupt", "corrupt webm stream: bad EBML lacing")
            number, length = value
            bias = 0 if index == 0 else (1 << (7 * length - 1)) - 1
            sizes.append(number - bias + (sizes[-1] if sizes else 0))
            position += length
    else:  # fixed: equal sizes
        sizes = [(len(block) - position) // count] * (count - 1)
    sizes.append(len(block) - position - sum(sizes))
    if min(sizes) < 0:
        raise UndecodableAudio("corrupt", "corrupt webm stream: block lacing overruns the block")
    frames = []
    for size in sizes:
        frames.append(block[position : position + size])
        position += size
    return frames


class MatroskaDemuxer(UnitDemuxer):
    """Matroska / WebM → frames of the first audio track."""

    name = "webm"

    def __init__(self) -> None:
        super().__init__()
        self._number: int | None = None

    def _unit(self, position: int) -> Unit | None:
        element = _vint(self._buffer, position, keep_marker=True)
        size = _vint(self._buffer, position + element[1], keep_marker=False) if element else None
        if element is None or size is None:
            return None
        (element_id, id_length), (body, size_length) = element, size
        start = position + id_length + size_length
        if element_id in _ENTER:
            return Unit(start, [])
        if body == _UNKNOWN:
            raise UndecodableAudio(
                "corrupt", f"corrupt webm stream: element {element_id:#x} of unknown size"
            )
        if element_id not in _READ_WHOLE:
            return Unit(start, [], skip=body)
        if body > MAX_UNIT_BYTES:
            raise UndecodableAudio("corrupt", "corrupt webm stream: a block exceeds 4 MiB")
        if start + body > len(self._buffer):
            return None
        return Unit(
            start + body, self._element(element_id, bytes(self._buffer[start : start + body]))
        )

    def _element(self, element_id: int, body: bytes) -> list[bytes]:
        if element_id == TRACKS:
            if self._number is None:
                self._read_tracks(body)
            return []
        if element_id == BLOCK_GROUP:
            blocks = _children(body).get(BLOCK, [])
            return [frame for block in blocks for frame in self._block(block)]
        return self._block(body)

    def _read_tracks(self, body: bytes) -> None:
        for entry_body in _children(body).get(TRACK_ENTRY, []):
            entry = _children(entry_body)
            if _uint(entry.get(TRACK_TYPE), 0) == _AUDIO_TRACK:
                self.track = _track_info(entry)
                self._number = _uint(entry.get(TRACK_NUMBER), 1)
                return
        raise UndecodableAudio("no_audio_stream", "the webm stream has no audio track")

    def _block(self, block: bytes) -> list[bytes]:
        number = _vint(block, 0, keep_marker=False)
        if number is None or len(block) < number[1] + 3:
            raise UndecodableAudio("corrupt", "corrupt webm stream: block too short")
        if self._number is None or number[0] != self._number:
            return []  # before Tracks, or another track's block
        flags = block[number[1] + 2]
        try:
            return _laced_frames(block, number[1] + 3, (flags >> 1) & 0x03)
        except IndexError:
            raise UndecodableAudio("corrupt", "corrupt webm stream: bad block lacing") from None
