"""Multichannel audio on the wire: interleaved raw audio split into one stream per channel.

Sans-IO. A multichannel session (`Config.multichannel`, `service/session/multichannel.py`)
transcribes each channel of interleaved raw audio (PCM or G.711) as its own stream: the
`Deinterleaver` splits what the client sends into each channel's bytes, in the same encoding,
keeping a partial frame (fewer bytes than one sample of every channel) for the next message. A
dialect whose channels arrive apart (Twilio's tracks, `protocol/dialects/twilio.py`) decodes
them as `ChannelAudio` instead.
"""

from __future__ import annotations

import attrs
import numpy as np

from protocol.native import Encoding

SAMPLE_BYTES: dict[str, int] = {"pcm_s16le": 2, "pcm_f32le": 4, "mulaw": 1, "alaw": 1}


@attrs.frozen
class ChannelAudio:
    """One channel's audio, in the session's encoding, already apart from the others."""

    channel: int
    data: bytes


class Deinterleaver:
    """Splits interleaved frames of `channels` samples into one byte stream per channel."""

    def __init__(self, encoding: Encoding, channels: int) -> None:
        if encoding not in SAMPLE_BYTES:
            raise ValueError(f"{encoding} audio cannot be split into channels")
        self.channels = channels
        self._width = SAMPLE_BYTES[encoding]
        self._frame = self._width * channels
        self._rest = b""

    def split(self, data: bytes) -> list[bytes]:
        """Each channel's bytes of the whole frames in `data` (and the rest kept before it)."""
        data = self._rest + data
        usable = len(data) - len(data) % self._frame
        self._rest = data[usable:]
        frames = np.frombuffer(data, np.uint8, usable).reshape(-1, self.channels, self._width)
        return [frames[:, channel, :].tobytes() for channel in range(self.channels)]
