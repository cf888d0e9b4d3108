"""Streaming Silero voice activity detection that keeps its state across chunks.

The ONNX model ships inside faster-whisper (`faster_whisper/assets/silero_vad_v6.onnx`); it is
loaded once per process and shared. A `StreamingVad` holds one stream's LSTM state, the
64-sample context the model expects before each 512-sample frame, and the samples left over
until the next full frame; offline users (`actors/transcriber/files.py`) run it inline in the
segmenter. Live sessions share the VAD actor instead (`vad_actor`), which runs every session's
frames in one call of a batched copy of the same model (`vad_batch`).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from actors.model.port import Samples
from actors.model.weights import silero_vad_path

FRAME = 512  # samples per VAD frame at 16 kHz: 32 ms
CONTEXT = 64


def load_session(model: str | bytes) -> Any:
    """An onnxruntime session on one CPU thread, as faster-whisper runs Silero."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 4
    return onnxruntime.InferenceSession(
        model, providers=["CPUExecutionProvider"], sess_options=options
    )


@functools.cache
def _session() -> Any:
    return load_session(silero_vad_path())


class StreamingVad:
    """Speech probability for each complete 32 ms frame of a 16 kHz stream."""

    def __init__(self) -> None:
        self._session = _session()
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._rest = np.zeros(0, dtype=np.float32)

    def probabilities(self, samples: Samples) -> np.ndarray[Any, np.dtype[np.float32]]:
        """One probability per frame completed by `samples`; the remainder waits for more."""
        audio = np.concatenate([self._rest, samples]) if len(self._rest) else samples
        count = len(audio) // FRAME
        self._rest = audio[count * FRAME :].astype(np.float32, copy=True)
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        frames = audio[: count * FRAME].reshape(count, FRAME)
        contexts = np.concatenate([self._context[None, :], frames[:-1, -CONTEXT:]], axis=0)
        batch = np.ascontiguousarray(np.concatenate([contexts, frames], axis=1), dtype=np.float32)
        self._context = frames[-1, -CONTEXT:].copy()
        output, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        return np.asarray(output, dtype=np.float32).reshape(-1)
