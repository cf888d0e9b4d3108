"""Decoded frames → mono float32 at a target rate, for files and live streams alike.

`FrameResampler` takes PyAV frames of any channel layout, sample format and rate, averages
their channels (`frame_to_mono`) and resamples with soxr's streaming resampler, keeping the
filter's state between frames. It is owned by one decoder (`actors.audio.file_decoder.FileDecoder`
or `actors.audio.stream_decoder.StreamingDecoder`), in whichever thread that decoder runs, so a
file and the same file streamed come out alike.
"""

from __future__ import annotations

import av
import numpy as np
import soxr

from actors.audio.demux import UndecodableAudio, checked_rate
from actors.model.port import SAMPLE_RATE, Samples

__all__ = ["EMPTY", "FrameResampler", "frame_to_mono"]

_MAX_CHANNELS = 8  # 7.1
EMPTY: Samples = np.zeros(0, np.float32)


def frame_to_mono(frame: av.AudioFrame) -> Samples:
    """Average a decoded frame's channels into float32 in [-1, 1], whatever its sample format."""
    channels, planes = len(frame.layout.channels), len(frame.planes)
    if not 1 <= channels <= _MAX_CHANNELS or planes != (channels if frame.format.is_planar else 1):
        # Corrupt headers can make a decoder emit such frames, and PyAV's `to_ndarray` then
        # reads past its buffers (a segfault, seen with 29-channel AAC from a damaged stream).
        raise UndecodableAudio(
            "corrupt", f"corrupt audio: a decoded frame has {channels} channels in {planes} planes"
        )
    data = frame.to_ndarray()
    if not frame.format.is_planar:
        data = data.reshape(-1, channels).T
    full_scale = np.float32(2.0 ** (8 * data.itemsize - 1))
    if data.dtype.kind == "u":
        scaled = data.astype(np.float32) / full_scale - np.float32(1.0)
    elif data.dtype.kind == "i":
        scaled = data.astype(np.float32) / full_scale
    else:  # float: NaN and ±Inf (a broken or hostile file) become silence and full scale
        scaled = np.nan_to_num(np.clip(data.astype(np.float32), -1.0, 1.0))
    mono: Samples = scaled[0].copy() if channels == 1 else scaled.mean(axis=0, dtype=np.float32)
    return mono


class FrameResampler:
    """Turn decoded frames into mono samples at `target_rate`, keeping filter state between
    frames; a change of input rate mid-stream drains the old filter and starts a new one."""

    def __init__(self, target_rate: int = SAMPLE_RATE) -> None:
        self.target_rate = target_rate
        self._rate: int | None = None
        self._stream: soxr.ResampleStream | None = None

    def push(self, frame: av.AudioFrame, *, skip: int = 0) -> Samples:
        """Resample `frame`, less its first `skip` samples (codec priming to drop)."""
        checked_rate(frame.sample_rate, f"{frame.format.name} audio")
        mono = frame_to_mono(frame)[skip:]
        head = self.finish() if frame.sample_rate != self._rate else EMPTY
        if frame.sample_rate != self._rate:
            self._rate = frame.sample_rate
            self._stream = (
                None
                if self._rate == self.target_rate
                else soxr.ResampleStream(self._rate, self.target_rate, 1, dtype="float32")
            )
        body = mono if self._stream is None else self._stream.resample_chunk(mono)
        return np.concatenate([head, body]) if len(head) else np.asarray(body, np.float32)

    def finish(self) -> Samples:
        """Drain the filter (end of stream, or before the input rate changes)."""
        if self._stream is None:
            return EMPTY
        tail = np.asarray(self._stream.resample_chunk(EMPTY, last=True), np.float32)
        self._stream, self._rate = None, None
        return tail
