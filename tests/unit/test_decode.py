"""Decoding any audio a user has: whole files (`decode_file`) and live streams
(`StreamingDecoder`), on the clips in tests/data (made by tests/data/make_clips.py) and on real
recordings (tests/data/speech)."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import tempfile
import wave
from pathlib import Path
from types import ModuleType

import numpy as np
import numpy.typing as npt
import pytest
import trio
from support.audio_files import DATA, SPEECH

from actors.audio.file_decoder import (
    AudioInfo,
    UndecodableAudio,
    decode_file,
    decode_file_async,
    probe_audio,
)
from actors.audio.stream_decoder import StreamingDecoder
from actors.model.port import SAMPLE_RATE, Samples


def _load_make_clips() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_clips", DATA / "make_clips.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_clips = _load_make_clips()
CLIPS = sorted(make_clips.CLIPS)
WEBM = DATA / "speech_48k_mono_opus.webm"


def _wav_seconds(path: Path) -> float:
    """Duration by the standard library, independent of the code under test."""
    with wave.open(str(path), "rb") as file:
        return file.getnframes() / file.getframerate()


CLIP_SECONDS = _wav_seconds(DATA / "speech_11k_stereo.wav")  # every clip holds this sentence


def _correlation(a: Samples, b: Samples, max_lag: int = 1600) -> float:
    """Peak normalized cross-correlation of `a` and `b` within ±`max_lag` samples."""
    size = 1 << (len(a) + len(b)).bit_length()
    spectrum = np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size))
    correlation = np.fft.irfft(spectrum, size)
    peak = max(correlation[: max_lag + 1].max(), correlation[-max_lag:].max())
    return float(peak / (np.linalg.norm(a) * np.linalg.norm(b)))


def _rms(samples: Samples) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def _stream(data: bytes, chunk_sizes: list[int]) -> tuple[Samples, list[int], StreamingDecoder]:
    """Feed `data` in chunks of the given sizes (cycled); return all output, the output length
    after each feed, and the decoder."""
    decoder = StreamingDecoder()
    pieces, lengths, position, index = [], [], 0, 0
    while position < len(data):
        size = chunk_sizes[index % len(chunk_sizes)]
        pieces.append(decoder.feed(data[position : position + size]))
        lengths.append(sum(map(len, pieces)))
        position, index = position + size, index + 1
    pieces.append(decoder.flush())
    return np.concatenate(pieces), lengths, decoder


@pytest.fixture(scope="module")
def lossless() -> dict[int, Samples]:
    """The sentence decoded from the lossless clips, by channel count (the stereo clips' right
    channel is a quieter, later copy, so their mono mix differs from the mono clips')."""
    return {
        1: decode_file(DATA / "speech_44k_mono.flac"),
        2: decode_file(DATA / "speech_11k_stereo.wav"),
    }


@pytest.mark.parametrize("name", CLIPS)
def test_each_format_decodes_to_the_sentence(name: str, lossless: dict[int, Samples]) -> None:
    path = DATA / name
    assert path.stat().st_size < 200 * 1024
    samples = decode_file(path.read_bytes())
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) / SAMPLE_RATE - CLIP_SECONDS) <= 0.050
    assert _rms(samples) > 0.02 and np.abs(samples).max() <= 1.0
    assert _correlation(samples, lossless[make_clips.CLIPS[name][1]]) > 0.8
    np.testing.assert_array_equal(decode_file(path), samples)  # from a path: same result


def test_probe_reads_headers_only() -> None:
    flac = probe_audio(DATA / "speech_44k_mono.flac")
    # the duration is compared with `pytest.approx`, which stands in for the float
    duration = pytest.approx(CLIP_SECONDS, abs=0.05)
    assert flac == AudioInfo("flac", "flac", 44100, 1, duration)  # type: ignore[arg-type]
    m4a = probe_audio((DATA / "speech_48k_stereo_aac.m4a").read_bytes())
    assert (m4a.codec, m4a.sample_rate, m4a.channels) == ("aac", 48000, 2)
    live = probe_audio(WEBM)  # a MediaRecorder-style live webm does not say how long it is
    assert (live.codec, live.sample_rate, live.duration_s) == ("opus", 48000, None)


def _tone_spectrum(samples: Samples) -> tuple[npt.NDArray[np.floating], npt.NDArray[np.floating]]:
    window = np.hanning(len(samples))
    magnitude = np.abs(np.fft.rfft(samples * window)) / window.sum() * 2
    return np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE), magnitude


@pytest.mark.parametrize(("container", "codec"), [("flac", "flac"), ("ogg", "libopus")])
def test_stereo_48k_is_downmixed_and_resampled(container: str, codec: str) -> None:
    """Left 1 kHz at 0.5, right 3 kHz at 0.25 plus 10 kHz (above the 8 kHz Nyquist of 16 kHz):
    the mono mix holds 1 kHz at 0.25 and 3 kHz at 0.125, and no 10 kHz alias at 6 kHz."""
    time = np.arange(2 * 48000) / 48000
    left = 0.5 * np.sin(2 * np.pi * 1000 * time)
    right = 0.25 * np.sin(2 * np.pi * 3000 * time) + 0.2 * np.sin(2 * np.pi * 10000 * time)
    data = make_clips.encode_clip(
        np.stack([left, right]).astype(np.float32), 48000, container=container, codec=codec
    )
    samples = decode_file(data)
    assert abs(len(samples) - 2 * SAMPLE_RATE) <= 0.02 * SAMPLE_RATE
    frequencies, magnitude = _tone_spectrum(samples[1600:-1600])
    at = {hz: magnitude[np.argmin(np.abs(frequencies - hz))] for hz in (1000, 3000, 6000)}
    assert frequencies[np.argmax(magnitude)] == pytest.approx(1000, abs=5)
    assert at[1000] == pytest.approx(0.25, rel=0.1)
    assert at[3000] == pytest.approx(0.125, rel=0.1)
    assert at[6000] < 0.01 * at[1000]


@pytest.mark.parametrize(
    "chunk_sizes",
    [pytest.param(None, id="250ms-chunks"), pytest.param([1, 7, 300, 4096], id="ragged-chunks")],
)
def test_streamed_webm_matches_the_file(chunk_sizes: list[int] | None) -> None:
    """A MediaRecorder-style webm/opus fed chunk by chunk gives the samples `decode_file` gives,
    and gives them as the chunks arrive, not at the end."""
    data = WEBM.read_bytes()
    whole = decode_file(data)
    per_250ms = round(len(data) / CLIP_SECONDS / 4)
    streamed, lengths, decoder = _stream(data, chunk_sizes or [per_250ms])
    assert abs(len(streamed) - len(whole)) <= 0.060 * SAMPLE_RATE
    assert _correlation(streamed, whole, max_lag=160) > 0.99
    assert lengths[len(lengths) // 2] > 0.3 * len(whole)
    statistics = decoder.statistics()
    assert (statistics.container, statistics.codec) == ("webm", "opus")
    assert statistics.bytes_in == len(data) and statistics.samples_out == len(streamed)
    with pytest.raises(RuntimeError, match="already flushed"):
        decoder.feed(data[:100])


def _with_unknown_cluster_sizes(data: bytes) -> bytes:
    """Rewrite every Cluster's size as "unknown", as Chrome's MediaRecorder writes them."""
    out, position = bytearray(data), 0
    while position < len(data):
        id_length = 9 - data[position].bit_length()
        element = int.from_bytes(data[position : position + id_length], "big")
        size_at = position + id_length
        size_length = 9 - data[size_at].bit_length()
        size = int.from_bytes(data[size_at : size_at + size_length], "big")
        size &= (1 << (7 * size_length)) - 1
        if element == 0x1F43B675:
            unknown = (1 << (8 * size_length - size_length + 1)) - 1  # marker + all ones
            out[size_at : size_at + size_length] = unknown.to_bytes(size_length, "big")
        position = size_at + size_length
        if element not in (0x18538067, 0x1F43B675):  # Segment and Cluster: step inside
            position += size
    return bytes(out)


def test_chrome_style_unknown_size_clusters() -> None:
    data = _with_unknown_cluster_sizes(WEBM.read_bytes())
    assert data != WEBM.read_bytes()
    whole = decode_file(WEBM)
    streamed, _, _ = _stream(data, [round(len(data) / CLIP_SECONDS / 4)])
    assert abs(len(streamed) - len(whole)) <= 0.060 * SAMPLE_RATE
    assert _correlation(streamed, whole, max_lag=160) > 0.99


def _fragmented_mp4() -> bytes:
    """What Safari's MediaRecorder sends: AAC in fragmented MP4."""
    rate, mono = 48000, decode_file(DATA / "speech_44k_mono.flac", target_rate=48000)
    clip: bytes = make_clips.encode_clip(
        mono[np.newaxis, :], rate, container="mp4", codec="aac",
        container_options={"movflags": "frag_keyframe+empty_moov+default_base_moof"},
    )  # fmt: skip
    return clip


@pytest.mark.parametrize(
    "name",
    ["speech_48k_stereo_opus.ogg", "speech_44k_stereo_vorbis.ogg", "speech_11k_stereo.wav",
     "speech_44k_stereo.mp3", "fragmented.mp4"],
)  # fmt: skip
def test_other_streamable_containers(name: str) -> None:
    data = _fragmented_mp4() if name == "fragmented.mp4" else (DATA / name).read_bytes()
    whole = decode_file(data)
    streamed, _, decoder = _stream(data, [1, 500, 3000])
    assert abs(len(streamed) - len(whole)) <= 0.060 * SAMPLE_RATE
    assert _correlation(streamed, whole, max_lag=160) > 0.99
    assert decoder.statistics().buffered_bytes < 70_000  # one page / fragment at most


def test_stream_memory_stays_bounded() -> None:
    """Sixty repeats of the clip's clusters in one live stream: the decoder never holds more
    than an element plus the last chunk, however long the stream runs."""
    data = WEBM.read_bytes()
    cluster = data.find(b"\x1f\x43\xb6\x75")
    stream = data[:cluster] + data[cluster:] * 60
    decoder, held = StreamingDecoder(), 0
    for position in range(0, len(stream), 4000):
        decoder.feed(stream[position : position + 4000])
        held = max(held, decoder.statistics().buffered_bytes)
    assert held < 4000 + 2000
    assert decoder.statistics().samples_out > 50 * CLIP_SECONDS * SAMPLE_RATE


@pytest.mark.parametrize(
    ("first_bytes", "kind"),
    [
        (b"\x00\x00\x01\x00" * 1024, "not_audio"),  # raw PCM sent with encoding=auto
        (b'{"type": "config", "sample_rate": 16000}', "not_audio"),
        ((DATA / "speech_44k_mono.flac").read_bytes()[:4096], "unsupported_codec"),
        ((DATA / "speech_48k_stereo_aac.m4a").read_bytes()[:60_000], "unsupported_codec"),
    ],
    ids=["pcm", "json", "flac", "plain-m4a"],
)
def test_stream_refuses_what_it_cannot_stream_at_once(first_bytes: bytes, kind: str) -> None:
    decoder = StreamingDecoder()
    with pytest.raises(UndecodableAudio) as caught:
        decoder.feed(first_bytes)
    assert caught.value.kind == kind
    if kind == "not_audio":
        assert "encoding=pcm_s16le" in str(caught.value)
    with pytest.raises(UndecodableAudio):  # and stays failed
        decoder.feed(b"more")


def test_stream_gives_up_without_an_audio_track_in_64_kib() -> None:
    """A webm whose Segment opens with 100 kB of padding (a Void element) and no Tracks."""
    data = WEBM.read_bytes()
    segment = data.find(b"\x18\x53\x80\x67")
    unknown_size = b"\x01\xff\xff\xff\xff\xff\xff\xff"
    void = b"\xec" + (0x01 << 56 | 100_000).to_bytes(8, "big") + bytes(100_000)
    stream = data[:segment] + b"\x18\x53\x80\x67" + unknown_size + void
    decoder = StreamingDecoder()
    with pytest.raises(UndecodableAudio, match="no audio track in the first 64 KiB"):
        for position in range(0, len(stream), 4096):
            decoder.feed(stream[position : position + 4096])
    assert 64 * 1024 < decoder.statistics().bytes_in <= 64 * 1024 + 4096


def test_stream_refuses_ogg_without_opus_or_vorbis() -> None:
    mono = decode_file(DATA / "speech_44k_mono.flac", target_rate=44100)
    data = make_clips.encode_clip(mono[np.newaxis, :], 44100, container="ogg", codec="flac")
    with pytest.raises(UndecodableAudio, match="no Opus or Vorbis") as caught:
        _stream(data, [2000])
    assert caught.value.kind == "unsupported_codec"


def test_stream_with_a_broken_page_is_corrupt() -> None:
    data = bytearray((DATA / "speech_48k_stereo_opus.ogg").read_bytes())
    fifth_page = [i for i in range(len(data)) if data[i : i + 4] == b"OggS"][4]
    data[fifth_page] = ord("X")
    decoder = StreamingDecoder()
    with pytest.raises(UndecodableAudio, match="lost page sync") as caught:
        for position in range(0, len(data), 1000):
            decoder.feed(bytes(data[position : position + 1000]))
    assert caught.value.kind == "corrupt"
    assert decoder.statistics().samples_out > 0  # what came before the damage was delivered


def test_stream_that_ends_inside_its_header() -> None:
    decoder = StreamingDecoder()
    assert len(decoder.feed(WEBM.read_bytes()[:8])) == 0
    with pytest.raises(UndecodableAudio, match="ended inside its header"):
        decoder.flush()
    assert len(StreamingDecoder().flush()) == 0  # no bytes at all: no audio, no error


@pytest.mark.parametrize(
    ("data", "kind", "words"),
    [
        (b"", "empty", "empty"),
        (b"Meeting notes\n- call the bank back\n" * 40, "not_audio", "not an audio file"),
        (b"1\n00:00:01,000 --> 00:00:02,000\nHello\n\n", "not_audio", "not an audio file"),
        (np.random.default_rng(7).bytes(40_000), "not_audio", "not an audio file"),
    ],
    ids=["empty", "text", "subtitles", "random"],
)
def test_undecodable_files_say_why(data: bytes, kind: str, words: str) -> None:
    with pytest.raises(UndecodableAudio, match=words) as caught:
        decode_file(data)
    assert caught.value.kind == kind


@pytest.mark.parametrize(
    ("name", "keep", "kind", "words"),
    [
        ("speech_44k_mono.flac", 0.5, "truncated", "declares 4.4 s of audio but only"),
        ("speech_11k_stereo.wav", 0.5, "truncated", "declares 4.4 s of audio but only 2.2 s"),
        ("speech_44k_stereo.mp3", 0.5, "truncated", "declares 4.4 s"),
        ("speech_48k_stereo_aac.m4a", 0.7, "corrupt", "mp4 file is truncated or corrupt"),
        ("speech_48k_mono_opus.webm", 0.02, "corrupt", "webm file is truncated or corrupt"),
    ],
)
def test_truncated_files_say_so(name: str, keep: float, kind: str, words: str) -> None:
    data = (DATA / name).read_bytes()
    with pytest.raises(UndecodableAudio, match=words) as caught:
        decode_file(data[: int(len(data) * keep)])
    assert caught.value.kind == kind


def test_mostly_corrupt_packets_are_refused() -> None:
    data = bytearray((DATA / "speech_48k_stereo_aac.m4a").read_bytes())
    start, end = len(data) // 10, len(data) * 8 // 10  # mdat comes first, moov last
    data[start:end] = np.random.default_rng(3).bytes(end - start)
    with pytest.raises(UndecodableAudio, match=r"corrupt aac stream: \d+ of \d+ packets") as caught:
        decode_file(bytes(data))
    assert caught.value.kind == "corrupt"


@pytest.mark.parametrize("seed", range(4))
def test_damaged_input_raises_only_undecodable_audio(seed: int) -> None:
    """Flipped bytes, overwritten runs and cut-out spans in every clip, decoded as a file and as
    a stream: each either decodes or raises `UndecodableAudio`, never anything else."""
    rng = np.random.default_rng(seed)
    for name in [*CLIPS, "fragmented.mp4"]:
        data = bytearray(
            _fragmented_mp4() if name == "fragmented.mp4" else (DATA / name).read_bytes()
        )
        at, length = int(rng.integers(len(data))), int(rng.integers(1, 2000))
        match seed % 3:
            case 0:
                for index in rng.integers(len(data), size=20):
                    data[index] = int(rng.integers(256))
            case 1:
                data[at : at + length] = rng.bytes(length)
            case _:
                del data[at : at + length]
        damaged = bytes(data)
        with contextlib.suppress(UndecodableAudio):
            decode_file(damaged)
        with contextlib.suppress(UndecodableAudio):
            _stream(damaged, [3000])


def test_empty_path(tmp_path: Path) -> None:
    (tmp_path / "upload.webm").touch()
    with pytest.raises(UndecodableAudio, match="empty"):
        decode_file(tmp_path / "upload.webm")


def test_no_temporary_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    for name in CLIPS:
        data = (DATA / name).read_bytes()
        decode_file(data)
        with pytest.raises(UndecodableAudio):
            decode_file(data[: len(data) // 50])
    assert list(scratch.iterdir()) == []


async def test_decode_file_async_runs_in_a_worker_thread() -> None:
    limiter = trio.CapacityLimiter(1)
    samples = await decode_file_async(WEBM.read_bytes(), limiter=limiter)
    np.testing.assert_array_equal(samples, decode_file(WEBM))
    with pytest.raises(UndecodableAudio):
        await decode_file_async(b"not audio at all", limiter=limiter)
    assert limiter.borrowed_tokens == 0


def _manifest_seconds(name: str) -> float:
    with (SPEECH / "MANIFEST.tsv").open() as file:
        rows = {row[0]: row[1] for row in csv.reader(file, delimiter="\t")}
    return float(rows[name])


@pytest.mark.parametrize(
    "name",
    ["faster_whisper/jfk.flac", "lhotse/common_voice_en_651325.mp3",
     "faster_whisper/stereo_diarization.wav"],
)  # fmt: skip
def test_real_recordings(name: str) -> None:
    samples = decode_file(SPEECH / name)
    assert abs(len(samples) / SAMPLE_RATE - _manifest_seconds(name)) <= 0.050
    assert _rms(samples) > 0.01


def test_stereo_recording_is_the_mean_of_its_channels() -> None:
    """stereo_diarization.wav is 16 kHz, one speaker a channel: the mono mix is their mean."""
    with wave.open(str(SPEECH / "faster_whisper" / "stereo_diarization.wav")) as file:
        frames = np.frombuffer(file.readframes(file.getnframes()), np.int16)
    channels = frames.reshape(-1, 2).T.astype(np.float32) / 32768
    assert _rms(channels[0]) > 0.01 and _rms(channels[1]) > 0.01
    samples = decode_file(SPEECH / "faster_whisper" / "stereo_diarization.wav")
    np.testing.assert_allclose(samples, channels.mean(axis=0), atol=1e-6)
