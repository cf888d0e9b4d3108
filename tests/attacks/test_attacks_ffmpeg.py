"""What FFmpeg may open (issue 21, findings 1 and 2): an upload, a `/ws` recording or a
streamed container reaches only the demuxer of the audio container its first bytes name, with
no protocol to open anything else. FFmpeg's SDP demuxer binds the UDP ports an "audio file"
names, its concat and playlist demuxers read the local files one names (another tenant's
recording among them): each such body is refused as `not_audio` before FFmpeg reads it."""

from __future__ import annotations

import io
import os
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from conftest import serve_app
from starlette.applications import Starlette
from support.audio_files import DATA
from support.fakes import FakeModel

from actors.audio.file_decoder import UndecodableAudio, decode_file, probe_audio
from actors.audio.stream_decoder import StreamingDecoder
from service.app import create_app
from service.config import Settings
from service.policy.security import ApiKeys, SecurityConfig

KEYS = ApiKeys.from_env({"CHORUS_API_KEYS": "alice:key-alice,bob:key-bob"})
LIBRARY = (DATA / "library.wav").resolve()


def sdp(streams: int) -> bytes:
    """A session description that asks FFmpeg to listen for RTP on `streams` UDP ports."""
    head = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    body = "".join(f"m=audio {41000 + 2 * n} RTP/AVP 0\r\n" for n in range(streams))
    return (head + body).encode()


HOSTILE = {
    "sdp": sdp(20),
    "ffconcat": f"ffconcat version 1.0\nfile '{LIBRARY}'\n".encode(),
    "ffconcat-relative": b"ffconcat version 1.0\nfile tests/data/library.wav\n",
    "hls": f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile://{LIBRARY}\n".encode(),
    "hls-http": b"#EXTM3U\n#EXTINF:10,\nhttp://127.0.0.1:9/x.wav\n#EXT-X-ENDLIST\n",
}


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("name", HOSTILE)
def test_bodies_that_name_other_resources_never_reach_ffmpeg(name: str) -> None:
    """Each hostile body is `not_audio`; none binds a socket or reads the file it names (the
    concat and playlist bodies decoded `library.wav` before the fix)."""
    before = open_descriptors()
    with pytest.raises(UndecodableAudio, match="not an audio file") as caught:
        decode_file(HOSTILE[name])
    assert caught.value.kind == "not_audio"
    with pytest.raises(UndecodableAudio):
        probe_audio(HOSTILE[name])
    with pytest.raises(UndecodableAudio, match="not a webm or ogg"):
        StreamingDecoder().feed(HOSTILE[name])
    assert open_descriptors() == before


def test_an_audio_header_does_not_open_a_second_demuxer() -> None:
    """A body that starts as an ID3 tag (so "mp3") but goes on as an SDP is read by the mp3
    demuxer only: nothing to decode, and no socket."""
    before = open_descriptors()
    forged = b"ID3\x04\x00\x00\x00\x00\x00\x00" + sdp(20)
    with pytest.raises(UndecodableAudio) as caught:
        decode_file(forged)
    assert caught.value.kind in ("corrupt", "truncated", "no_audio_stream")
    assert open_descriptors() == before


def test_a_file_without_audio_still_says_so() -> None:
    """An mp4 holding only video is opened (it is an allowed container) and refused as
    `no_audio_stream`."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=1)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(UndecodableAudio, match="mp4 file has no audio stream") as caught:
        decode_file(buffer.getvalue())
    assert caught.value.kind == "no_audio_stream"


def test_every_allowed_container_still_decodes() -> None:
    for name in (
        "library.wav",
        "speech_44k_mono.flac",
        "speech_44k_stereo.mp3",
        "speech_44k_stereo_vorbis.ogg",
        "speech_48k_mono_opus.webm",
        "speech_48k_stereo_aac.m4a",
        "speech_48k_stereo_opus.ogg",
    ):
        assert len(decode_file((DATA / name).read_bytes())) > 16000, name


def app(tmp_path: Path) -> Starlette:
    security = SecurityConfig(api_keys=KEYS)
    return create_app(
        Settings(model="fake", data_dir=tmp_path), model=FakeModel(), security=security
    )


async def test_uploads_of_hostile_bodies_are_refused_with_415(tmp_path: Path) -> None:
    """On a real server, every upload route refuses the SDP and concat bodies at once (415;
    400 `invalid_request_error` on the OpenAI route, as OpenAI answers a file it cannot read),
    the process holds no more descriptors than before, and another tenant's recording path
    named in a concat body is not transcribed."""
    recording = tmp_path / "recordings" / "s-alice.wav"
    recording.parent.mkdir(parents=True)
    recording.write_bytes(LIBRARY.read_bytes())
    bodies = {
        "sdp": sdp(200),
        "ffconcat": f"ffconcat version 1.0\nfile '{recording}'\n".encode(),
    }
    async with serve_app(app(tmp_path)) as address, httpx.AsyncClient(timeout=30) as http:
        headers = {"authorization": "Bearer key-bob"}
        assert (await http.get(f"http://{address}/health", headers=headers)).status_code == 200
        before = open_descriptors()
        for name, body in bodies.items():
            for path, fields, status in (
                ("/v1/audio/transcriptions", {"model": "whisper-1"}, 400),
                ("/transcribe", {}, 415),
            ):
                answer = await http.post(
                    f"http://{address}{path}",
                    headers=headers,
                    data=fields,
                    files={"file": ("call.wav", body, "audio/wav")},
                )
                assert answer.status_code == status, (name, path, answer.text)
                assert "not an audio file" in answer.text
        assert open_descriptors() <= before + 2  # the client's own keep-alive sockets


def float_wav(samples: np.ndarray) -> bytes:
    """A 32-bit float WAV of `samples` (16 kHz mono), written by hand as a recorder might."""
    import struct

    data = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 16000, 64000, 4, 32)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(data))
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )


def test_nan_and_infinite_samples_are_replaced_at_decode() -> None:
    """A float WAV full of NaN and ±Inf decodes to finite samples in [-1, 1], as a file and as
    a stream (issue 21, finding 11: they reached the model as they were)."""
    samples = np.zeros(16000, np.float32)
    samples[::3], samples[1::3], samples[2::7] = np.nan, np.inf, -np.inf
    body = float_wav(samples)
    for decoded in (decode_file(body), StreamingDecoder().feed(body)):
        assert len(decoded) > 15000
        assert np.isfinite(decoded).all()
        assert np.abs(decoded).max() <= 1.0


def id3_tag(size: int = 20) -> bytes:
    """An ID3v2.4 tag of `size` bytes of padding, as podcast tools put before audio."""
    return b"ID3\x04\x00\x00" + bytes([0, 0, size >> 7 & 0x7F, size & 0x7F]) + bytes(size)


def adts_of(path: Path) -> bytes:
    """The AAC of an .m4a as a raw ADTS stream."""
    buffer = io.BytesIO()
    with av.open(str(path)) as source, av.open(buffer, "w", format="adts") as out:
        stream = out.add_stream_from_template(source.streams.audio[0])
        for packet in source.demux(source.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return buffer.getvalue()


@pytest.mark.parametrize("behind", ["flac", "aac"])
def test_an_id3_tag_before_flac_or_aac_is_looked_past(behind: str) -> None:
    """An ID3v2 tag also stands before ADTS AAC and FLAC: the file is opened with the demuxer
    of what follows the tag, not as MP3."""
    body = (
        (DATA / "speech_44k_mono.flac").read_bytes()
        if behind == "flac"
        else adts_of(DATA / "speech_48k_stereo_aac.m4a")
    )
    assert len(decode_file(id3_tag() + body)) > 3 * 16000
    assert probe_audio(id3_tag() + body).container == behind
