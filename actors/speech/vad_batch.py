"""Silero VAD for many streams in one onnxruntime call: a batched copy of faster-whisper's model.

faster-whisper's `silero_vad_v6.onnx` takes `input` [frames, 64 + 512] and the LSTM state `h`,
`c` [1, 1, 128]: its first axis is time, not a batch, and the state's batch axis is fixed at 1.
`batched_model()` rewrites the graph once per process (with `onnx`) so that one call serves
many streams. The encoder (STFT and convolutions: stateless, most of the work) takes every
stream's frames packed one after another, [frames, 576]; a `Gather` (new input `order`) lays its
output out time-major, [steps, streams, 128]; the LSTM, whose state now has a free batch axis,
runs with `sequence_lens` (new input `lengths`), so a stream with fewer frames than the longest
stops early and keeps the state after its own last frame. Nothing is padded before the encoder:
a stream with one frame costs one frame's work beside a stream with thirty.

Each stream's probabilities and state are bit for bit those of `StreamingVad` on the same audio
(onnxruntime 1.31; pinned by `tests/session/test_vad_actor.py`).

Sans-IO and blocking: the VAD actor (`vad_actor`) calls `BatchedSilero.run` in a worker thread,
one batch at a time.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Protocol

import attrs
import numpy as np
import numpy.typing as npt

from actors.model.weights import silero_vad_path
from actors.speech.vad import CONTEXT, FRAME, load_session

HIDDEN = 128
Vector = npt.NDArray[np.float32]


@attrs.frozen(eq=False)
class VadState:
    """A stream's Silero state between calls: the LSTM's `h` and `c`, and the last 64 samples."""

    h: Vector = attrs.field(factory=lambda: np.zeros(HIDDEN, np.float32))
    c: Vector = attrs.field(factory=lambda: np.zeros(HIDDEN, np.float32))
    context: Vector = attrs.field(factory=lambda: np.zeros(CONTEXT, np.float32))


@attrs.frozen(eq=False)
class Work:
    """One stream's share of a batch: its state and its next complete frames, [n ≥ 1, 512]."""

    state: VadState
    frames: Vector


@attrs.frozen(eq=False)
class Answer:
    probabilities: Vector  # one per frame of the `Work`
    state: VadState  # the stream's state after its last frame


class VadModel(Protocol):
    def run(self, work: Sequence[Work]) -> list[Answer]:
        """Blocking: speech probabilities for each stream's frames, in one batch."""
        ...


class BatchedSilero:
    """The batched Silero model; `run` serves any number of streams in one onnxruntime call."""

    def __init__(self) -> None:
        self._session = load_session(batched_model())

    def run(self, work: Sequence[Work]) -> list[Answer]:
        if not work:
            return []
        lengths = np.array([len(item.frames) for item in work], dtype=np.int32)
        if lengths.min() < 1 or any(item.frames.shape[1:] != (FRAME,) for item in work):
            raise ValueError("each stream needs one or more complete frames of 512 samples")
        frames = np.concatenate([item.frames for item in work]).astype(np.float32, copy=False)
        starts = np.cumsum(lengths) - lengths
        # each frame after the 64 samples heard before it: the frame before, or the state's
        rows = np.empty((len(frames), CONTEXT + FRAME), dtype=np.float32)
        rows[:, CONTEXT:] = frames
        rows[1:, :CONTEXT] = frames[:-1, -CONTEXT:]
        rows[starts, :CONTEXT] = np.stack([item.state.context for item in work])
        steps = int(lengths.max())
        # row t * streams + s of the LSTM's input is frame t of stream s; past a stream's last
        # frame any row will do (the LSTM stops at `lengths`): its own last one
        order = starts[None, :] + np.minimum(np.arange(steps)[:, None], lengths[None, :] - 1)
        output, h, c = self._session.run(
            None,
            {
                "input": rows,
                "order": order.reshape(-1).astype(np.int64),
                "lengths": lengths,
                "h": np.stack([item.state.h for item in work])[None],
                "c": np.stack([item.state.c for item in work])[None],
            },
        )
        table = np.asarray(output, dtype=np.float32).reshape(len(work), steps)
        contexts = frames[starts + lengths - 1, -CONTEXT:]
        return [  # views into this call's own outputs: nothing else holds them
            Answer(table[index, :length], VadState(h[0, index], c[0, index], contexts[index]))
            for index, length in enumerate(lengths)
        ]


@functools.cache
def batched_model() -> bytes:
    """faster-whisper's Silero graph with a batch axis on the LSTM (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(silero_vad_path())
    graph = model.graph
    (lstm,) = [node for node in graph.node if node.op_type == "LSTM"]
    if list(lstm.input[5:7]) != ["h", "c"] or lstm.input[4]:
        raise RuntimeError(f"unexpected Silero graph in {silero_vad_path()}: LSTM {lstm.input}")
    for value in [*graph.input, *graph.output]:
        if value.name in ("h", "c", "hn", "cn"):
            dims = value.type.tensor_type.shape.dim
            if [dim.dim_value for dim in dims] != [1, 1, HIDDEN]:
                raise RuntimeError(f"unexpected Silero state shape in {silero_vad_path()}: {dims}")
            dims[1].dim_param = "streams"  # a oneof: replaces the fixed 1
    graph.input.extend(
        [
            helper.make_tensor_value_info("order", TensorProto.INT64, ["steps_by_streams"]),
            helper.make_tensor_value_info("lengths", TensorProto.INT32, ["streams"]),
        ]
    )
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([-1], np.int64), "batch/minus_one"),
            numpy_helper.from_array(np.array([HIDDEN], np.int64), "batch/hidden"),
        ]
    )
    encoded = lstm.input[0]  # [frames, 1, 128]
    layout: list[Any] = [
        helper.make_node("Gather", [encoded, "order"], ["batch/gathered"], axis=0),
        helper.make_node("Shape", ["lengths"], ["batch/streams"]),
        helper.make_node(
            "Concat", ["batch/minus_one", "batch/streams", "batch/hidden"], ["batch/shape"], axis=0
        ),
        helper.make_node("Reshape", ["batch/gathered", "batch/shape"], ["batch/steps"]),
    ]
    lstm.input[0] = "batch/steps"  # [steps, streams, 128]
    lstm.input[4] = "lengths"
    nodes = list(graph.node)
    at = nodes.index(lstm)
    del graph.node[:]
    graph.node.extend([*nodes[:at], *layout, *nodes[at:]])
    onnx.checker.check_model(model)
    return model.SerializeToString()  # type: ignore[no-any-return]
