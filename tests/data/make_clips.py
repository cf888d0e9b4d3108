"""Generate the small audio fixtures that tests/unit/test_decode.py decodes.

Run from the repository root: ``uv run python tests/data/make_clips.py``. It needs the
``espeak-ng`` system package for the spoken sentence; PyAV does all the encoding, in memory,
and only the finished files are written here. Re-running rewrites the same set of files
(encoders may differ by a few bytes between library versions; the tests only check durations,
loudness and frequencies, never bytes).

``encode_clip`` is also imported by the tests to build clips on the fly (sines, long files).
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import soxr

HERE = Path(__file__).resolve().parent
SENTENCE = "The quick brown fox jumps over the lazy dog while the radio plays quietly."

Samples = npt.NDArray[np.float32]


def speak(text: str = SENTENCE) -> tuple[Samples, int]:
    """Return espeak-ng's rendering of `text` as float32 mono and its sample rate."""
    wav = subprocess.run(["espeak-ng", "--stdout", text], check=True, capture_output=True).stdout
    with av.open(io.BytesIO(wav), "r") as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        rate = stream.rate
    pcm = np.concatenate(chunks).astype(np.float32) / 32768.0
    return pcm, rate


def encode_clip(
    channels: Samples,
    rate: int,
    *,
    container: str,
    codec: str,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
) -> bytes:
    """Encode float32 samples shaped (channels, n) into `container` with `codec`, in memory."""
    layout = {1: "mono", 2: "stereo"}[channels.shape[0]]
    buffer = io.BytesIO()
    with av.open(
        buffer, "w", format=container, container_options=container_options or {}
    ) as output:
        stream = output.add_stream(codec, rate=rate, options=options or {})
        assert isinstance(stream, av.AudioStream)  # `codec` names an audio codec
        stream.layout = layout
        if codec == "vorbis":
            stream.codec_context.options = {"strict": "experimental"}
        frame_size = stream.codec_context.frame_size or 1024
        resampler = av.AudioResampler(
            format=stream.format.name, layout=layout, rate=rate, frame_size=frame_size
        )
        source = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(channels, dtype=np.float32), format="fltp", layout=layout
        )
        source.sample_rate = rate
        for frame in [*resampler.resample(source), *resampler.resample(None)]:
            output.mux(stream.encode(frame))
        # The ogg muxer refuses the encoder's final empty packet (FLAC's updated header).
        output.mux([p for p in stream.encode(None) if p.size or container != "ogg"])
    return buffer.getvalue()


def stereo(mono: Samples) -> Samples:
    """A two-channel version of `mono` whose channels differ (right is quieter, 5 ms late)."""
    delay = np.zeros(len(mono) // 200, dtype=np.float32)
    right = 0.6 * np.concatenate([delay, mono])[: len(mono)]
    return np.stack([mono, right]).astype(np.float32)


# name -> (rate, channel count, container, codec, options, container options)
CLIPS: dict[str, tuple[int, int, str, str, dict[str, str], dict[str, str]]] = {
    # What a browser's MediaRecorder sends: opus in live webm (unknown sizes, no cues), mono.
    "speech_48k_mono_opus.webm": (
        48000,
        1,
        "webm",
        "libopus",
        {"b": "32000"},
        {"live": "1", "cluster_time_limit": "1000"},
    ),
    "speech_48k_stereo_opus.ogg": (48000, 2, "ogg", "libopus", {"b": "48000"}, {}),
    "speech_44k_stereo_vorbis.ogg": (44100, 2, "ogg", "vorbis", {"b": "64000"}, {}),
    "speech_44k_stereo.mp3": (44100, 2, "mp3", "libmp3lame", {"b": "64000"}, {}),
    "speech_48k_stereo_aac.m4a": (48000, 2, "ipod", "aac", {"b": "64000"}, {}),
    "speech_44k_mono.flac": (44100, 1, "flac", "flac", {}, {}),
    "speech_11k_stereo.wav": (11025, 2, "wav", "pcm_s16le", {}, {}),
}


def main() -> None:
    voice, voice_rate = speak()
    for name, (rate, channel_count, container, codec, options, muxer) in CLIPS.items():
        mono = soxr.resample(voice, voice_rate, rate).astype(np.float32)
        channels = stereo(mono) if channel_count == 2 else mono[np.newaxis, :]
        data = encode_clip(
            channels,
            rate,
            container=container,
            codec=codec,
            options=options,
            container_options=muxer,
        )
        (HERE / name).write_bytes(data)
        print(f"{name}: {len(data) / 1024:.1f} KiB, {len(voice) / voice_rate:.2f} s")


if __name__ == "__main__":
    main()
