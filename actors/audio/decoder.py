"""The one interface a live session decodes audio through: bytes in, 16 kHz mono float32 out.

`AudioDecoder` is what a session's segmenter task holds (`service/session/segmenting.py`); it owns
the decoder, feeds it every audio chunk in order, and flushes it once at the end of the stream.
Two decoders implement it: `actors.audio.pcm.PcmDecoder` (raw PCM and G.711, a few
microseconds a chunk) and `actors.audio.stream_decoder.StreamingDecoder` (containers, FFmpeg,
milliseconds a chunk). `blocking` says which kind a decoder is, so the owner knows to call it
from a worker thread; nothing else about the decoder is the owner's business.

Both are sans-IO and never wait for data that has not arrived. Undecodable input raises
`actors.audio.demux.UndecodableAudio`.
"""

from __future__ import annotations

from typing import Protocol

import attrs

from actors.model.port import Samples


@attrs.frozen
class DecoderStatistics:
    bytes_in: int
    samples_out: int  # at the decoder's output rate (16 kHz)
    decoded_s: float  # `samples_out` in seconds
    buffered_bytes: int  # held for a partial sample, element, page or fragment: the memory bound
    # chunks that ended inside a sample (raw PCM only; the partial sample waits for the next)
    misaligned_frames: int = 0
    container: str | None = None  # sniffed from the first bytes: webm, ogg, wav, mp4, mp3, aac
    codec: str | None = None  # the PCM encoding, or the codec once the track header is read


class AudioDecoder(Protocol):
    """A live stream's audio decoder, owned by one task."""

    max_chunk_s: float
    """The most audio one `feed` may decode to before it raises `UndecodableAudio` (`too_long`).
    The owner may lower it before each chunk (a pacer's allowance). A decoder whose output is a
    fixed multiple of its input (PCM: the frame size limit already bounds it) never refuses."""

    @property
    def blocking(self) -> bool:
        """True when `feed` and `flush` may hold the CPU for milliseconds (FFmpeg decoding): the
        owner then calls them from a worker thread rather than on the event loop."""
        ...

    def feed(self, data: bytes) -> Samples:
        """Take the next chunk; return the samples it completes (possibly none)."""
        ...

    def flush(self) -> Samples:
        """End of stream: return what was held back. The decoder is not fed again."""
        ...

    def statistics(self) -> DecoderStatistics: ...
