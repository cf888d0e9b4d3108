"""The `AudioDecoder` interface: the PCM and the container decoder driven the same way, and the
session's `_decode` calling it (inline, or in a worker thread when the decoder is `blocking`)."""

from __future__ import annotations

import io
import threading
import wave
from collections.abc import Callable

import numpy as np
import pytest

from actors.audio.decoder import AudioDecoder, DecoderStatistics
from actors.audio.pcm import PcmDecoder
from actors.audio.stream_decoder import StreamingDecoder
from actors.model.port import SAMPLE_RATE, Samples
from protocol.native import Config
from service.session.config import settle
from service.session.ports import StreamOptions
from service.session.segmenting import _decode, make_decoder

TONE = (0.25 * np.sin(2 * np.pi * 440 * np.arange(8000) / SAMPLE_RATE) * 32767).astype("<i2")


def _wav(pcm: bytes) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(SAMPLE_RATE)
        file.writeframes(pcm)
    return out.getvalue()


# each decoder, and the bytes of the same half second of 16 kHz tone in its format
DECODERS: dict[str, tuple[Callable[[], AudioDecoder], bytes]] = {
    "pcm": (lambda: PcmDecoder("pcm_s16le", SAMPLE_RATE), TONE.tobytes()),
    "container": (StreamingDecoder, _wav(TONE.tobytes())),
}


def _feed_all(decoder: AudioDecoder, data: bytes, size: int) -> Samples:
    pieces = [decoder.feed(data[at : at + size]) for at in range(0, len(data), size)]
    return np.concatenate([*pieces, decoder.flush()])


@pytest.mark.parametrize("kind", DECODERS)
def test_both_decoders_answer_through_the_same_interface(kind: str) -> None:
    make, data = DECODERS[kind]
    decoder = make()
    samples = _feed_all(decoder, data, 999)  # odd chunks: samples split across chunks
    np.testing.assert_allclose(samples, TONE / 32768.0, atol=1e-4)
    statistics = decoder.statistics()
    assert isinstance(statistics, DecoderStatistics)
    assert statistics.bytes_in == len(data)
    assert statistics.samples_out == len(TONE)
    assert statistics.decoded_s == pytest.approx(0.5)
    assert decoder.blocking is (kind == "container")


def test_misaligned_pcm_is_counted_and_its_partial_sample_held() -> None:
    decoder = PcmDecoder("pcm_s16le", SAMPLE_RATE)
    assert len(decoder.feed(b"\x01\x02\x03")) == 1
    statistics = decoder.statistics()
    assert (statistics.misaligned_frames, statistics.buffered_bytes) == (1, 1)
    assert (statistics.bytes_in, statistics.samples_out, statistics.codec) == (3, 1, "pcm_s16le")
    assert len(decoder.feed(b"\x04")) == 1  # the held byte and this one make a sample
    assert decoder.statistics().buffered_bytes == 0
    assert decoder.statistics().misaligned_frames == 1


def test_a_split_frame_of_whole_samples_is_not_misaligned() -> None:
    """Stereo: a chunk that ends between the channels of a frame holds whole samples."""
    decoder = PcmDecoder("pcm_s16le", SAMPLE_RATE, channels=2)
    assert len(decoder.feed(b"\x00\x01\x00\x02\x00\x03")) == 1
    statistics = decoder.statistics()
    assert (statistics.misaligned_frames, statistics.buffered_bytes) == (0, 2)


def test_container_decoder_never_counts_misaligned_frames() -> None:
    make, data = DECODERS["container"]
    decoder = make()
    _feed_all(decoder, data, 333)
    assert decoder.statistics().misaligned_frames == 0
    assert decoder.statistics().container == "wav"


def test_pcm_flush_drops_a_dangling_partial_sample() -> None:
    decoder = PcmDecoder("pcm_s16le", SAMPLE_RATE)
    decoder.feed(b"\x01\x02\x03")
    assert len(decoder.flush()) == 0
    assert decoder.statistics().buffered_bytes == 0


def test_pcm_flush_drains_the_resampler() -> None:
    decoder = PcmDecoder("pcm_s16le", 8000)
    fed = decoder.feed(TONE[:4000].tobytes())
    drained = decoder.flush()
    assert len(drained) > 0  # the filter's tail
    assert abs(len(fed) + len(drained) - 8000) <= 2
    assert decoder.statistics().samples_out == len(fed) + len(drained)


def test_container_flush_ends_the_decoder() -> None:
    make, data = DECODERS["container"]
    decoder = make()
    decoder.feed(data)
    decoder.flush()
    with pytest.raises(RuntimeError, match="already flushed"):
        decoder.feed(data)


def test_make_decoder_chooses_by_encoding() -> None:
    options = StreamOptions()
    assert isinstance(make_decoder(settle(Config(encoding="auto"), options)), StreamingDecoder)
    pcm = make_decoder(settle(Config(encoding="mulaw", sample_rate=8000, channels=2), options))
    assert isinstance(pcm, PcmDecoder)
    assert (pcm.encoding, pcm.sample_rate, pcm.channels) == ("mulaw", 8000, 2)


class _ThreadRecorder:
    """An `AudioDecoder` that records which thread each call ran on."""

    max_chunk_s = 60.0

    def __init__(self, blocking: bool) -> None:
        self.blocking = blocking
        self.threads: list[int] = []

    def feed(self, data: bytes) -> Samples:
        self.threads.append(threading.get_ident())
        return np.zeros(len(data), np.float32)

    def flush(self) -> Samples:
        self.threads.append(threading.get_ident())
        return np.zeros(1, np.float32)

    def statistics(self) -> DecoderStatistics:
        return DecoderStatistics(bytes_in=0, samples_out=0, decoded_s=0.0, buffered_bytes=0)


@pytest.mark.parametrize("blocking", [False, True])
async def test_a_blocking_decoder_runs_in_a_worker_thread(blocking: bool) -> None:
    decoder = _ThreadRecorder(blocking)
    assert len(await _decode(decoder, b"abc")) == 3
    assert len(await _decode(decoder, None)) == 1
    loop = threading.get_ident()
    assert [thread == loop for thread in decoder.threads] == [not blocking, not blocking]
