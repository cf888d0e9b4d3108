"""`encoding=auto` live streams → 16 kHz mono float32, one chunk at a time.

A `StreamingDecoder` is an `actors.audio.decoder.AudioDecoder` that belongs to one session and
is driven by that session's segmenter task, one `feed` per received chunk through
`trio.to_thread.run_sync` (it is `blocking`: it may take a few milliseconds of CPU, but never
waits for data that has not arrived). It sniffs the container
from the first bytes, hands bytes to the matching demuxer (`actors.audio.demux*`), decodes each
whole packet at once with one persistent FFmpeg decoder, and resamples with the same
`FrameResampler` (`actors.audio.resample`) as `decode_file`, so a streamed file and the
uploaded file come out alike.

Memory is bounded: the demuxer keeps at most one unfinished element, page or fragment, the
decoder and resampler keep their own small state, and nothing already returned is kept. What
one chunk may decode to is bounded too: headers must declare 8-192 kHz (`checked_rate`), and a
chunk that decodes to more than `max_chunk_s` of audio (a decoding bomb: thousands of tiny
Opus packets) raises `too_long` as soon as it passes the limit. The check runs after every
packet, and a PCM packet (a WAV's whole `data`, a WebM block of PCM) is decoded in pieces of at
most `PCM_PIECE_BYTES`, so no packet decodes to more than a few MiB before it is counted (issue
21: a large WAV message decoded as one packet took many times its size before the cap was
checked; measured: docs/security.md).
Compressed codecs' packets decode to at most one codec frame (≤ 120 ms of Opus, 8,192 samples
of Vorbis, 65,535 of FLAC).

Errors: anything undecodable raises `UndecodableAudio`, promptly: a first chunk that starts no
known container raises as soon as 12 bytes are in; a known container that shows no audio
track, or decodes no audio at all, within `max_header_bytes` raises then; a run of
`max_bad_packets` undecodable packets raises. After raising, the decoder stays failed (every
later call raises the same error); the session reports it and ends the stream.
"""

from __future__ import annotations

from collections.abc import Callable

import av
import av.error
import numpy as np

from actors.audio.decoder import DecoderStatistics
from actors.audio.demux import Demuxer, OggDemuxer, TrackInfo, WavDemuxer, sniff_container
from actors.audio.demux_ffmpeg import Mp4FragmentDemuxer, RawDemuxer
from actors.audio.demux_matroska import MatroskaDemuxer
from actors.audio.file_decoder import UndecodableAudio
from actors.audio.resample import FrameResampler
from actors.model.port import SAMPLE_RATE, Samples

_SNIFF_BYTES = 12
PCM_PIECE_BYTES = 64 * 1024  # the most PCM decoded at once (~0.17 s of 48 kHz float stereo)
MAX_CHUNK_S = 60.0  # audio one chunk may decode to (a 31 kB Ogg of 2-byte Opus packets: 1,224 s)
_DEMUXERS: dict[str, Callable[[], Demuxer]] = {
    "webm": MatroskaDemuxer,
    "ogg": OggDemuxer,
    "wav": WavDemuxer,
    "mp4": Mp4FragmentDemuxer,
    "mp3": lambda: RawDemuxer("mp3"),
    "aac": lambda: RawDemuxer("aac"),
}
_EMPTY: Samples = np.zeros(0, np.float32)


class StreamingDecoder:
    """Decode a live webm/ogg (also wav, fragmented mp4, mp3, adts) stream fed in chunks."""

    blocking = True  # FFmpeg decoding: milliseconds of CPU a chunk

    def __init__(
        self,
        *,
        target_rate: int = SAMPLE_RATE,
        max_header_bytes: int = 64 * 1024,
        max_bad_packets: int = 10,
        max_chunk_s: float = MAX_CHUNK_S,
    ) -> None:
        self.target_rate = target_rate
        self.max_chunk_s = max_chunk_s
        self.max_header_bytes = max_header_bytes
        self.max_bad_packets = max_bad_packets
        self.bytes_in = 0
        self.samples_out = 0
        self._head = b""
        self._demuxer: Demuxer | None = None
        self._decoder: av.AudioCodecContext | None = None
        self._resampler = FrameResampler(target_rate)
        self._skip = 0
        self._piece_bytes: int | None = None  # PCM: decode packets in pieces of this size
        self._bad_run = 0
        self._decoded = False
        self._failure: Exception | None = None  # raised again by every later call

    def statistics(self) -> DecoderStatistics:
        demuxer = self._demuxer
        return DecoderStatistics(
            bytes_in=self.bytes_in,
            samples_out=self.samples_out,
            decoded_s=self.samples_out / self.target_rate,
            buffered_bytes=len(self._head) if demuxer is None else demuxer.buffered_bytes,
            container=None if demuxer is None else demuxer.name,
            codec=None if self._decoder is None else self._decoder.name,
        )

    def feed(self, chunk: bytes) -> Samples:
        """Take the next chunk; return the samples that became available (possibly none)."""
        return self._guarded(self._feed, chunk)

    def flush(self) -> Samples:
        """End of stream: decode what is held back and drain the filters. Later calls raise."""
        return self._guarded(self._flush, b"")

    def _guarded(self, step: Callable[[bytes], Samples], chunk: bytes) -> Samples:
        if self._failure is not None:
            raise self._failure
        try:
            samples = step(chunk)
        except UndecodableAudio as failure:
            self._failure = failure
            raise
        self.samples_out += len(samples)
        return samples

    def _feed(self, chunk: bytes) -> Samples:
        self.bytes_in += len(chunk)
        if self._demuxer is None:
            self._head += chunk
            if len(self._head) < _SNIFF_BYTES:
                return _EMPTY
            self._demuxer = self._sniffed(self._head)
            chunk, self._head = self._head, b""
        packets = self._demuxer.feed(chunk)
        if self._decoder is None and self._demuxer.track is not None:
            self._decoder = self._open_decoder(self._demuxer.track)
        samples: list[Samples] = []
        limit = int(self.max_chunk_s * self.target_rate)
        out = 0
        for piece in (piece for packet in packets for piece in self._pieces(packet)):
            if piece:
                samples.append(self._decode(piece))
                out += len(samples[-1])
                if out > limit:  # stop now: what is decoded so far is the most memory it takes
                    raise UndecodableAudio(
                        "too_long",
                        f"one chunk of {len(chunk)} bytes decodes to more than "
                        f"{self.max_chunk_s:g} s of audio; stream audio as it is recorded, "
                        "or upload a file to /v1/listen",
                    )
        if not self._decoded and self.bytes_in > self.max_header_bytes:
            what = "audio track" if self._demuxer.track is None else "decodable audio"
            raise UndecodableAudio(
                "corrupt",
                f"no {what} in the first {self.max_header_bytes // 1024} KiB "
                f"of the {self._demuxer.name} stream",
            )
        return np.concatenate(samples) if samples else _EMPTY

    def _flush(self, _: bytes) -> Samples:
        if self._demuxer is None:
            if not self._head:
                return _EMPTY
            self._sniffed(self._head.ljust(_SNIFF_BYTES, b"\0"))  # raises if it is no container
            raise UndecodableAudio("truncated", "the stream ended inside its header")
        pieces = [self._decode(packet) for packet in self._demuxer.flush() if packet]
        if self._decoder is not None:
            pieces.append(self._decode(None))  # drain the decoder
        pieces.append(self._resampler.finish())
        self._failure = RuntimeError("this StreamingDecoder was already flushed")
        return np.concatenate(pieces)

    def _sniffed(self, head: bytes) -> Demuxer:
        name = sniff_container(head)
        if name is None:
            raise UndecodableAudio(
                "not_audio",
                f"not a webm or ogg audio stream: it starts with {head[:_SNIFF_BYTES].hex(' ')} "
                "(raw PCM needs encoding=pcm_s16le or pcm_f32le and sample_rate)",
            )
        if name not in _DEMUXERS:
            raise UndecodableAudio(
                "unsupported_codec", f"{name} cannot be decoded as a live stream; upload the file"
            )
        return _DEMUXERS[name]()

    def _open_decoder(self, track: TrackInfo) -> av.AudioCodecContext:
        try:
            decoder = av.CodecContext.create(track.codec, "r")
            assert isinstance(decoder, av.AudioCodecContext)
            if track.extradata:
                decoder.extradata = track.extradata
            if track.sample_rate:
                decoder.sample_rate = track.sample_rate
            if track.channels:
                decoder.layout = f"{track.channels}c"
            decoder.open()
        except (av.error.FFmpegError, ValueError) as error:
            raise UndecodableAudio(
                "unsupported_codec", f"cannot decode {track.codec} audio: {error}"
            ) from error
        self._skip = track.skip_samples
        self._piece_bytes = _pcm_piece_bytes(track)
        return decoder

    def _pieces(self, packet: bytes) -> list[bytes] | list[memoryview]:
        """`packet`, cut into whole sample frames of at most `PCM_PIECE_BYTES` for PCM."""
        size = self._piece_bytes
        if size is None or len(packet) <= size:
            return [packet]
        view = memoryview(packet)
        return [view[start : start + size] for start in range(0, len(packet), size)]

    def _decode(self, payload: bytes | memoryview | None) -> Samples:
        """Decode one packet (an empty one would mean "drain"; None drains)."""
        assert self._decoder is not None
        try:
            frames = self._decoder.decode(None if payload is None else av.Packet(bytes(payload)))
        except av.error.FFmpegError as error:
            self._bad_run += 1
            if self._bad_run >= self.max_bad_packets:
                raise UndecodableAudio(
                    "corrupt",
                    f"corrupt {self._decoder.name} stream: {self._bad_run} packets in a row "
                    f"failed to decode ({error.strerror})",
                ) from error
            return _EMPTY
        self._bad_run = 0
        return self._frames(frames)

    def _frames(self, frames: list[av.AudioFrame]) -> Samples:
        pieces = []
        for frame in frames:
            self._decoded = True
            skip = min(self._skip, frame.samples)
            self._skip -= skip
            pieces.append(self._resampler.push(frame, skip=skip))
        return np.concatenate(pieces) if pieces else _EMPTY


def _pcm_piece_bytes(track: TrackInfo) -> int | None:
    """The largest whole number of `track`'s sample frames within `PCM_PIECE_BYTES`, when it is
    PCM (`pcm_s16le`, `pcm_f32be`, `pcm_mulaw`, …); None for compressed codecs."""
    if not track.codec.startswith("pcm_"):
        return None
    digits = "".join(character for character in track.codec if character.isdigit())
    frame = max(1, track.channels) * (int(digits) // 8 if digits else 1)
    return max(frame, PCM_PIECE_BYTES // frame * frame)
