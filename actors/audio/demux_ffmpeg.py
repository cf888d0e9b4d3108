"""Stream demuxers: fragmented MP4 (Safari's MediaRecorder), and raw MP3 / ADTS AAC
elementary streams cut by FFmpeg's codec parsers.

Owned by one `StreamingDecoder`, never waits (see `actors.audio.demux`). For MP4 (a
`UnitDemuxer`) the parser walks top-level boxes: FFmpeg reads the audio track's codec setup from
the init segment (`ftyp` + `moov`) once; then each `moof` is held until its `mdat` is complete,
and the fragment is cut into packets here, by the `trun` sample sizes and data offsets, without
FFmpeg. (Reopening FFmpeg for every fragment cost a fixed time each, so a stream of tiny
fragments cost CPU out of all proportion to its bytes: issue 11, M4; measured:
docs/benchmarks.md.) Every loop is bounded by bytes received:
`trun` entries lie in the `moof`, and the samples cut must lie in the `mdat`. Memory stays at
one fragment. A plain (non-fragmented) MP4 cannot be decoded before its end and is refused as a
stream; upload it. Raw streams are cut into frames by FFmpeg's codec parser.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator

import attrs
import av
import av.error

from actors.audio.demux import MAX_UNIT_BYTES, TrackInfo, Unit, UnitDemuxer
from actors.audio.file_decoder import UndecodableAudio

_READ_WHOLE = {b"ftyp", b"moov", b"moof", b"mdat"}


class Mp4FragmentDemuxer(UnitDemuxer):
    """Fragmented MP4 (`ftyp moov (moof mdat)*`) → packets of its first audio track."""

    name = "mp4"

    def __init__(self) -> None:
        super().__init__()
        self._init = b""
        self._track_id = 0
        self._default_sizes: dict[int, int] = {}  # track_ID → the `trex` default sample size
        self._moof = b""
        self._moof_at = 0

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer) + len(self._init) + len(self._moof)

    def _unit(self, position: int) -> Unit | None:
        available = len(self._buffer) - position
        if available < 8:
            return None
        size, kind = struct.unpack_from(">I4s", self._buffer, position)
        header = 8
        if size == 1:  # a 64-bit size follows the type
            if available < 16:
                return None
            size, header = struct.unpack_from(">Q", self._buffer, position + 8)[0], 16
        if kind == b"mdat" and (self.track is None or not self._moof):
            raise UndecodableAudio(
                "unsupported_codec",
                "only fragmented mp4 (moov, then moof/mdat pairs) can be streamed; "
                "upload a plain mp4 or m4a as a file instead",
            )
        if size < header:
            raise UndecodableAudio("corrupt", f"corrupt mp4 stream: box {kind!r} of {size} bytes")
        if kind not in _READ_WHOLE:  # styp, sidx, free, mfra, …: nothing to decode
            return Unit(position + header, [], skip=size - header)
        if size > MAX_UNIT_BYTES:
            raise UndecodableAudio("corrupt", f"mp4 box {kind!r} exceeds 4 MiB")
        if available < size:
            return None
        box = bytes(self._buffer[position : position + size])
        return Unit(position + size, self._box(kind, box, self._offset + position, header))

    def _box(self, kind: bytes, box: bytes, at: int, header: int) -> list[bytes]:
        if kind == b"moof":
            self._moof, self._moof_at = box, at
            return []
        try:
            if kind == b"mdat":
                return self._samples(box, at, header)
            if self.track is None:  # ftyp, moov: the init segment, read once
                self._init += box
                if kind == b"moov":
                    self.track = self._read_track(self._init)
                    self._default_sizes = _trex_sizes(box)
                    self._init = b""
        except struct.error as error:  # a box too short for the fields its flags announce
            raise UndecodableAudio("corrupt", f"corrupt mp4 stream: a short {kind!r}") from error
        finally:
            if kind == b"mdat":
                self._moof = b""
        return []

    def _read_track(self, init: bytes) -> TrackInfo:
        try:
            with av.open(  # the mp4 demuxer itself, opening nothing the data names
                io.BytesIO(init),
                "r",
                format="mov",
                options={"protocol_whitelist": "none"},
                metadata_errors="replace",
            ) as container:
                if not container.streams.audio:
                    raise UndecodableAudio("no_audio_stream", "the mp4 stream has no audio track")
                stream = container.streams.audio[0]
                codec = stream.codec_context
                if codec is None:
                    raise UndecodableAudio("unsupported_codec", "the mp4 audio codec is unknown")
                self._track_id = stream.id  # FFmpeg's mov demuxer: the `tkhd` track_ID
                return TrackInfo(codec.name, codec.sample_rate, codec.channels, codec.extradata)
        except av.error.FFmpegError as error:
            raise UndecodableAudio(
                "corrupt", f"corrupt mp4 stream header: {error.strerror}"
            ) from error

    def _samples(self, mdat: bytes, mdat_at: int, header: int) -> list[bytes]:
        """The audio track's samples in `mdat` (at `mdat_at` in the stream), cut as the held
        `moof` lays them out: one packet per `trun` entry."""
        packets: list[bytes] = []
        for run in _runs(self._moof, self._moof_at, self._default_sizes):
            if run.track_id != self._track_id:
                continue
            start = run.start - mdat_at
            if start < header or start + run.length > len(mdat):
                raise UndecodableAudio(
                    "corrupt", "corrupt mp4 fragment: its samples lie outside its mdat"
                )
            if run.sizes is None and not run.size:
                continue  # empty samples: nothing to decode (and no bound on their count)
            for size in run.sizes if run.sizes is not None else [run.size] * run.count:
                packets.append(mdat[start : start + size])
                start += size
        return packets


@attrs.frozen
class _Run:
    """One `trun`: `count` samples from `start` (an offset in the stream), each of the size
    in `sizes`, or all of `size` when the run lists no sizes."""

    track_id: int
    start: int
    count: int
    size: int
    sizes: list[int] | None

    @property
    def length(self) -> int:
        return sum(self.sizes) if self.sizes is not None else self.count * self.size


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """The boxes in `data[start:end]`: (type, where its body starts, where it ends)."""
    while end - start >= 8:
        size, kind = struct.unpack_from(">I4s", data, start)
        header = 8
        if size == 1:
            size, header = struct.unpack_from(">Q", data, start + 8)[0], 16
        elif size == 0:  # "to the end of the enclosing box"
            size = end - start
        if size < header or start + size > end:
            raise UndecodableAudio("corrupt", f"corrupt mp4 stream: box {kind!r} of {size} bytes")
        yield kind, start + header, start + size
        start += size


def _trex_sizes(moov: bytes) -> dict[int, int]:
    """track_ID → default_sample_size, from the `trex` boxes in `moov`'s `mvex`."""
    sizes: dict[int, int] = {}
    for kind, body, end in _boxes(moov, 8, len(moov)):
        if kind == b"mvex":
            for child, at, _ in _boxes(moov, body, end):
                if child == b"trex":
                    track_id, _, _, size = struct.unpack_from(">4xIIII", moov, at)
                    sizes[track_id] = size
    return sizes


def _runs(moof: bytes, moof_at: int, default_sizes: dict[int, int]) -> Iterator[_Run]:
    """Every `trun` of every `traf` in `moof` (at `moof_at` in the stream), with the stream
    offset of its first sample resolved as ISO/IEC 14496-12 §8.8.7 and §8.8.8 say: from the
    `tfhd` base (explicit, the moof, or where the previous traf's data ended) plus the run's
    data offset, or where the previous run ended. Reads only what is in `moof`."""
    data_end = moof_at  # the first traf's base is the moof when nothing else is said
    for kind, body, end in _boxes(moof, 8, len(moof)):
        if kind != b"traf":
            continue
        track_id: int | None = None
        base = size = 0
        for child, at, child_end in _boxes(moof, body, end):
            if child == b"tfhd":
                flags, track_id = struct.unpack_from(">II", moof, at)
                at += 8
                base = data_end
                if flags & 0x000001:  # base-data-offset-present
                    base = struct.unpack_from(">Q", moof, at)[0]
                    at += 8
                elif flags & 0x020000:  # default-base-is-moof
                    base = moof_at
                at += 4 * bool(flags & 0x000002) + 4 * bool(flags & 0x000008)
                size = default_sizes.get(track_id, 0)
                if flags & 0x000010:  # default-sample-size-present
                    size = struct.unpack_from(">I", moof, at)[0]
                data_end = base
            elif child == b"trun":
                if track_id is None:
                    raise UndecodableAudio("corrupt", "corrupt mp4 fragment: trun before tfhd")
                run = _trun(moof, at, child_end, track_id, base, data_end, size)
                data_end = run.start + run.length
                yield run


def _trun(
    moof: bytes, at: int, end: int, track_id: int, base: int, data_end: int, size: int
) -> _Run:
    flags, count = struct.unpack_from(">II", moof, at)
    at += 8
    start = data_end
    if flags & 0x001:  # data-offset-present
        start = base + struct.unpack_from(">i", moof, at)[0]
        at += 4
    at += 4 * bool(flags & 0x004)  # first-sample-flags
    fields = bin(flags & 0xF00).count("1")  # per sample: duration, size, flags, time offset
    if count * fields * 4 > end - at:
        raise UndecodableAudio("corrupt", "corrupt mp4 fragment: a trun longer than its box")
    sizes = None
    if flags & 0x200:  # sample-size-present
        values = struct.unpack_from(f">{count * fields}I", moof, at)
        sizes = list(values[bool(flags & 0x100) :: fields])
    return _Run(track_id, start, count, size, sizes)


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
