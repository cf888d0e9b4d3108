"""`UnitDemuxer`, the feed loop the container demuxers share, on a toy container, and the real
demuxers standing on it."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from actors.audio.demux import OggDemuxer, UndecodableAudio, Unit, UnitDemuxer, WavDemuxer
from actors.audio.demux_ffmpeg import Mp4FragmentDemuxer, RawDemuxer
from actors.audio.demux_matroska import MatroskaDemuxer

DATA = Path(__file__).resolve().parents[1] / "data"


class ToyDemuxer(UnitDemuxer):
    """Units of a 1-byte kind and a 2-byte big-endian length: `A` holds a packet, `S` is skipped
    as it streams past, `X` is malformed. Records the stream offset of every unit it reads."""

    name = "toy"

    def __init__(self) -> None:
        super().__init__()
        self.offsets: list[int] = []

    def _unit(self, position: int) -> Unit | None:
        if len(self._buffer) - position < 3:
            return None
        kind, size = struct.unpack_from(">cH", self._buffer, position)
        if kind == b"X":
            raise UndecodableAudio("corrupt", "a malformed unit")
        if kind == b"S":
            self.offsets.append(self._offset + position)
            return Unit(position + 3, [], skip=size)
        if len(self._buffer) - position < 3 + size:
            return None
        self.offsets.append(self._offset + position)
        return Unit(position + 3 + size, [bytes(self._buffer[position + 3 : position + 3 + size])])


def unit(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack(">H", len(payload)) + payload


STREAM = unit(b"A", b"one") + unit(b"S", b"x" * 5000) + unit(b"A", b"two") + unit(b"A", b"")


def test_whole_units_come_out_whatever_the_chunking() -> None:
    for size in (1, 2, 3, 7, 100, len(STREAM)):
        demuxer = ToyDemuxer()
        packets = []
        for at in range(0, len(STREAM), size):
            packets += demuxer.feed(STREAM[at : at + size])
        assert packets == [b"one", b"two", b""], size
        assert demuxer.offsets == [0, 6, 5009, 5015], size
        assert demuxer.buffered_bytes == 0
        assert demuxer.flush() == []


def test_skipped_bytes_are_passed_over_not_buffered() -> None:
    demuxer = ToyDemuxer()
    assert demuxer.feed(STREAM[:10]) == [b"one"]  # and the header of the skipped unit
    for at in range(10, 5006, 1000):  # the skipped body, arriving in pieces
        assert demuxer.feed(STREAM[at : min(at + 1000, 5009)]) == []
        assert demuxer.buffered_bytes == 0
    assert demuxer.feed(STREAM[5009:]) == [b"two", b""]


def test_only_the_unfinished_tail_is_held() -> None:
    demuxer = ToyDemuxer()
    assert demuxer.feed(STREAM[:5]) == []
    assert demuxer.buffered_bytes == 5  # `A`, its length, and two of its three bytes
    assert demuxer.feed(STREAM[5:9]) == [b"one"]
    assert demuxer.buffered_bytes == 0  # the skipped unit's header is read, its body skipped


def test_a_malformed_unit_raises() -> None:
    demuxer = ToyDemuxer()
    with pytest.raises(UndecodableAudio) as caught:
        demuxer.feed(unit(b"A", b"ok") + unit(b"X", b""))
    assert caught.value.kind == "corrupt"


@pytest.mark.parametrize(
    ("demuxer", "clip"),
    [
        (OggDemuxer, "speech_48k_stereo_opus.ogg"),
        (WavDemuxer, "speech_11k_stereo.wav"),
        (MatroskaDemuxer, "speech_48k_mono_opus.webm"),
    ],
)
def test_container_demuxers_stand_on_the_shared_loop(demuxer: type[UnitDemuxer], clip: str) -> None:
    data = (DATA / clip).read_bytes()
    whole = demuxer()
    packets = whole.feed(data)
    assert packets and whole.track is not None
    trickled = demuxer()
    pieces = [trickled.feed(data[at : at + 777]) for at in range(0, len(data), 777)]
    assert b"".join(p for piece in pieces for p in piece) == b"".join(packets)
    assert trickled.track == whole.track


def test_mp4_and_raw_demuxers() -> None:
    assert issubclass(Mp4FragmentDemuxer, UnitDemuxer)
    assert not issubclass(RawDemuxer, UnitDemuxer)  # FFmpeg's parser cuts raw streams
