"""Traces: everything the clients of one run saw, one JSON line per session (`--trace`), and
the way back from such a file to session records, so that every figure of `bench.figures` and
`bench.timeline` (caption delay included) can be recomputed after the fact.

Plain functions that write or read one file; nothing here runs a benchmark. A line holds the
session's outcome, its conversation's spans and length, each chunk's (audio end, sent at) and
each frame's (arrived at, frame), times in seconds from the run's start. Records read back have
no audio: their conversations carry the spans and the length only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attrs
import msgspec

from bench.client import Arrival, Outcome, SessionRecord
from bench.conversation import Conversation, Span
from protocol.native import ServerFrame


class TraceSpan(msgspec.Struct):
    clip: str
    start: float
    end: float
    reference: str | None = None


class TraceSession(msgspec.Struct):
    """One line of a trace file."""

    client: int
    outcome: Outcome
    reason: str
    close_code: int | None
    spans: list[TraceSpan]
    sends: list[tuple[float, float]]  # (audio end, sent at)
    frames: list[tuple[float, ServerFrame]]  # (arrived at, frame)
    duration: float = 0.0  # the conversation's audio; 0 in traces written before it was kept
    started: bool = True
    send_lag_s: float = 0.0


_line_decoder: msgspec.json.Decoder[TraceSession] = msgspec.json.Decoder(TraceSession)


def write_trace(records: Sequence[SessionRecord], begin: float, path: Path) -> Path:
    """One JSON line per session, times in seconds from `begin`."""
    lines = []
    for record in records:
        session = TraceSession(
            client=record.client,
            outcome=record.outcome,
            reason=record.reason,
            close_code=record.close_code,
            spans=[TraceSpan(**attrs.asdict(span)) for span in record.conversation.spans],
            sends=[
                (end, at - begin) for end, at in zip(record.audio_ends, record.sent_at, strict=True)
            ],
            frames=[(arrival.at - begin, arrival.frame) for arrival in record.arrivals],
            duration=record.conversation.duration,
            started=record.started,
            send_lag_s=record.send_lag_s,
        )
        lines.append(msgspec.json.encode(session))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def read_trace(path: Path) -> list[SessionRecord]:
    """The sessions of a trace file as records (times from the run's start, no audio)."""
    records = []
    for line in path.read_bytes().splitlines():
        if line.strip():
            records.append(session_record(_line_decoder.decode(line)))
    return records


def session_record(session: TraceSession) -> SessionRecord:
    spans = tuple(Span(span.clip, span.start, span.end, span.reference) for span in session.spans)
    audio_ends = tuple(end for end, _ in session.sends)
    duration = session.duration or (audio_ends[-1] if audio_ends else 0.0)
    return SessionRecord(
        client=session.client,
        conversation=Conversation(pcm=b"", spans=spans, duration=duration),
        outcome=session.outcome,
        reason=session.reason,
        started=session.started,
        audio_ends=audio_ends,
        sent_at=tuple(at for _, at in session.sends),
        send_lag_s=session.send_lag_s,
        arrivals=tuple(Arrival(at=at, frame=frame) for at, frame in session.frames),
        close_code=session.close_code,
    )
