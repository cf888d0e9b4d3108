"""Where a client's bytes become audio: 16 kHz mono float32, whatever arrived.

`decoder` (the `AudioDecoder` interface a live session decodes through), `pcm` (raw PCM and
G.711 frames of a live stream), `stream_decoder` (containers and codecs of a live stream, one
chunk at a time, over the incremental demuxers `demux`, `demux_matroska`, `demux_ffmpeg`) and
`file_decoder` (whole uploaded files, piece by piece), both resampling through `resample`.
All sans-IO: each decoder is owned by one session's segmenter task or one upload's task.
"""
