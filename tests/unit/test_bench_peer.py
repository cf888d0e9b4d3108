"""The bench's WhisperLive peer without WhisperLive: its protocol client against a small fake.

The fake speaks just enough of WhisperLive's WebSocket protocol: an options message, then
`SERVER_READY`, float32 audio, messages holding the last segments (times as strings, the last
one in progress), and a close when `END_OF_AUDIO` comes. It commits a segment after 0.5 s of
digital silence (the bench's conversations have exact zeros between clips), or, in the modes
that test the drain, only once audio has stopped coming ("late") or never ("never").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import trio
from trio_websocket import WebSocketRequest, serve_websocket

from bench.audio import SAMPLE_RATE, Clip, make_clip
from bench.client import StreamOptions
from bench.conversation import Conversation, build_conversation, build_conversations
from bench.figures import session_figures, text_lags, word_error_rate
from bench.load import peer_model_directory
from bench.load_options import parse_arguments
from bench.peer import (
    UNDRAINED,
    WhisperLiveStreamer,
    answers_tcp,
    peer_server_command,
    warm_up,
    whisperlive_driver,
    whisperlive_url,
)
from bench.peer_protocol import (
    CAPTION_SOURCE,
    Message,
    Segment,
    Transcript,
    options_message,
    pcm16_to_float32,
)
from bench.ratios import compare
from bench.report import load_markdown
from bench.run import RunPlan, search_capacity
from bench.schema import LoadReport
from bench.whisperlive_server import parse_arguments as launcher_arguments
from bench.whisperlive_server import run_options
from protocol.native import Error, Final, Partial, Ready

FAST = StreamOptions(speed=10.0, drain_s=2.0, connect_timeout_s=2.0)


def tone(seconds: float, *, level: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (level * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def clip(name: str, seconds: float, reference: str | None) -> Clip:
    return make_clip(name, tone(seconds), reference)


def segment(start: float, end: float, text: str, completed: bool) -> dict[str, Any]:
    return {
        "start": f"{start:.3f}",
        "end": f"{end:.3f}",
        "text": f" {text}",
        "completed": completed,
    }


async def fake_whisperlive(
    request: WebSocketRequest, *, texts: Sequence[str], mode: str, seen: list[Any]
) -> None:
    socket = await request.accept()
    options = json.loads(await socket.get_message())
    seen.append(options)
    uid = options["uid"]

    async def send(**fields: Any) -> None:
        await socket.send_message(json.dumps({"uid": uid, **fields}))

    if mode == "full":
        await send(status="WAIT", message=2.5)
        await socket.aclose()
        return
    await send(message="SERVER_READY", backend="faster_whisper")
    await send(language="en", language_prob=0.99)  # a message the bench ignores
    transcript: list[dict[str, Any]] = []
    audio_s, start, last_voice = 0.0, None, 0.0

    async def commit() -> None:
        nonlocal start
        assert start is not None
        text = texts[len(transcript) % len(texts)]
        transcript.append(segment(start, last_voice, text, completed=True))
        start = None
        await send(segments=transcript[-10:])

    while True:
        message: str | bytes | None = None
        with trio.move_on_after(0.2 if mode == "late" else 60):
            message = await socket.get_message()
        if message is None:  # no audio for a while: the client is draining
            if start is not None:
                await commit()
            continue
        if message == b"END_OF_AUDIO":
            seen.append("END_OF_AUDIO")
            await socket.aclose(code=1000)
            return
        assert isinstance(message, bytes)
        samples = np.frombuffer(message, dtype=np.float32)
        assert float(np.abs(samples).max(initial=0.0)) <= 1.0
        chunk_s = len(samples) / SAMPLE_RATE
        if np.any(samples != 0):
            if start is None:
                start = audio_s
            last_voice = audio_s + chunk_s
            text = texts[len(transcript) % len(texts)]
            await send(segments=[*transcript[-10:], segment(start, last_voice, text, False)])
        elif mode == "ok" and start is not None and audio_s + chunk_s - last_voice >= 0.5:
            await commit()
        audio_s += chunk_s


async def open_fake(
    nursery: trio.Nursery, texts: Sequence[str], mode: str = "ok"
) -> tuple[str, list[Any]]:
    seen: list[Any] = []
    handler = partial(fake_whisperlive, texts=texts, mode=mode, seen=seen)
    server = await nursery.start(
        partial(serve_websocket, handler, "127.0.0.1", 0, ssl_context=None)
    )
    return f"http://127.0.0.1:{server.port}", seen


def two_clips() -> Conversation:
    clips = [clip("a", 1.0, "hello there"), clip("b", 1.2, "general kenobi")]
    return build_conversation(clips, target_s=3.0)


async def test_streamer_records_a_whole_session(nursery: trio.Nursery) -> None:
    url, seen = await open_fake(nursery, ["Hello there.", "General Kenobi!"])
    streamer = WhisperLiveStreamer(model="tiny.en", config={"same_output_threshold": 5})
    conversation = two_clips()
    record = await streamer(whisperlive_url(url), conversation, FAST)
    assert (record.outcome, record.reason, record.close_code) == ("completed", "", 1000)
    options = seen[0]
    assert (options["language"], options["task"], options["model"]) == (
        "en",
        "transcribe",
        "tiny.en",
    )
    assert options["use_vad"] is True
    assert options["same_output_threshold"] == 5  # the config over WhisperLive's defaults
    assert seen[-1] == "END_OF_AUDIO"
    assert record.audio_sent_s == pytest.approx(conversation.duration)
    kinds = [type(arrival.frame) for arrival in record.arrivals]
    assert kinds[0] is Ready
    assert kinds.count(Final) == 2  # each completed segment once, though the server resends it
    figures = session_figures(record)
    assert figures.finals == 2
    assert figures.unmatched_finals == 0
    assert all(latency > 0 for latency in figures.final_latencies)
    assert len(figures.first_partial_latencies) == 2
    assert word_error_rate([("hello there general kenobi", figures.hypothesis)]).wer == 0.0
    assert len(figures.text_lags) == len(record.sent_at)


@pytest.mark.parametrize(("mode", "finals"), [("late", 1), ("never", 0)])
async def test_streamer_waits_for_the_last_commit(
    nursery: trio.Nursery, mode: str, finals: int
) -> None:
    url, seen = await open_fake(nursery, ["hello there"], mode)
    conversation = build_conversation([clip("a", 1.0, "hello there")], target_s=0.0)
    options = StreamOptions(speed=10.0, drain_s=0.6, connect_timeout_s=2.0)
    begin = trio.current_time()
    record = await WhisperLiveStreamer()(whisperlive_url(url), conversation, options)
    assert record.outcome == "completed"
    assert record.reason == ("" if finals else UNDRAINED)
    assert seen[-1] == "END_OF_AUDIO"
    assert session_figures(record).finals == finals
    drained = trio.current_time() - begin - conversation.duration / options.speed
    if mode == "never":  # nothing committed: END_OF_AUDIO once drain_s has passed
        assert drained >= options.drain_s
    else:  # committed 0.2 s after the last chunk: END_OF_AUDIO then, not at drain_s
        assert drained < options.drain_s


async def test_streamer_tells_a_full_server(nursery: trio.Nursery) -> None:
    url, _ = await open_fake(nursery, ["x"], "full")
    conversation = build_conversation([clip("a", 0.5, "x")], target_s=0.0)
    record = await WhisperLiveStreamer()(whisperlive_url(url), conversation, FAST)
    assert (record.outcome, record.reason) == ("refused", "WAIT before SERVER_READY")
    assert record.sent_at == ()


async def test_streamer_without_a_server() -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conversation = build_conversation([clip("a", 0.5, "x")], target_s=0.0)
    record = await WhisperLiveStreamer()(f"ws://127.0.0.1:{port}/", conversation, FAST)
    assert record.outcome == "failed"
    assert "cannot connect" in record.reason
    assert not await answers_tcp(f"http://127.0.0.1:{port}")


async def test_capacity_search_through_the_peer_driver(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    clips = [clip("a", 1.0, "hello there"), clip("b", 1.0, "general kenobi")]
    url, _ = await open_fake(nursery, ["hello there", "general kenobi"])
    assert await answers_tcp(url)
    await warm_up(url)
    plan = RunPlan(
        label="whisperlive",
        url=url,
        stream=FAST,
        stagger_s=0.05,
        slack_s=5.0,
        driver=whisperlive_driver("tiny.en"),
        settle_s=0.0,
        score_together=False,  # every final counted, however the fake's timing falls
    )

    def conversations(count: int) -> list[Conversation]:
        return build_conversations(clips, count, target_s=3.0)

    search = await search_capacity(plan, [1, 2], conversations, naive=False)
    assert search.capacity == 2, search.stop_reason
    two = search.runs[1]
    assert (two.sessions.started, two.sessions.completed) == (2, 2)
    assert (two.finals, two.wer) == (4, 0.0)
    assert two.final_latency_s.count == 4
    assert two.text_lag_s.count > 0
    assert two.transcriber is None and two.max_lag_s is None
    # its segments' ends are audio seconds of the stream: caption delay is measured
    assert search.caption_source == CAPTION_SOURCE
    assert two.caption_delay_s.count > 0 and two.first_text_s.count == 0  # clips under 2 s
    peer = search_as_peer(search)
    report = LoadReport(
        kind="load",
        created="now",
        machine={},
        options={},
        searches=[search_as_chorus(search), peer],
        peer_comparisons=[compare(search_as_chorus(search), peer)],
    )
    text = load_markdown(report)
    assert "| whisperlive | 2 | 2 | 2 | 0 | 0 |" in text
    assert "whisper-live 0.10.0" in text
    assert "capacity, chorus / whisperlive: 1.00" in text
    assert "commit latency" in text


def search_as_peer(search: Any) -> Any:
    import msgspec

    return msgspec.structs.replace(search, peer=True, server="whisper-live 0.10.0, batch")


def search_as_chorus(search: Any) -> Any:
    import msgspec

    runs = [msgspec.structs.replace(run, label="chorus") for run in search.runs]
    return msgspec.structs.replace(search, label="chorus", runs=runs)


# --- pieces -------------------------------------------------------------------------------------


def test_transcript_turns_messages_into_native_frames() -> None:
    transcript = Transcript()
    ready = transcript.frames(Message(uid="u", message="SERVER_READY", backend="faster_whisper"))
    assert isinstance(ready[0], Ready) and transcript.ready
    first = [Segment(start="0.340", end="1.100", text=" Printing.", completed=False)]
    (partial_frame,) = transcript.frames(Message(segments=first))
    assert isinstance(partial_frame, Partial)
    assert (partial_frame.text, partial_frame.start, partial_frame.end) == ("Printing.", 0.34, 1.1)
    assert transcript.pending and not transcript.settled(1.0)
    done = Segment(start="0.340", end="4.740", text=" Printing, in the only sense", completed=True)
    going = Segment(start="4.740", end="7.700", text=" differs from most", completed=False)
    frames = transcript.frames(Message(segments=[done, going]))
    assert [type(frame) for frame in frames] == [Final, Partial]
    assert isinstance(frames[0], Final) and frames[0].end == 4.74
    resent = transcript.frames(Message(segments=[done]))  # resent, now nothing in progress
    assert resent == []
    assert transcript.committed_end == 4.74
    assert transcript.settled(5.5) and not transcript.settled(6.0)
    assert transcript.frames(Message(uid="u", language="en")) == []
    wait = Transcript()
    assert wait.frames(Message(status="WAIT", message=1.5)) == [] and wait.wait
    error = Transcript()
    (failure,) = error.frames(Message(status="ERROR", message="Failed to load model"))
    assert isinstance(failure, Error) and failure.fatal


def test_decoding_and_encoding() -> None:
    from bench.peer_protocol import message_decoder

    raw = (
        b'{"uid": "u", "segments": '
        b'[{"start": "0.000", "end": "1.500", "text": " hi", "completed": true}]}'
    )
    message = message_decoder.decode(raw)
    assert message.segments is not None
    assert message.segments[0].bounds == (0.0, 1.5)
    assert message_decoder.decode(b'{"uid": "u", "status": "WAIT", "message": 0.5}').message == 0.5
    pcm = np.array([0, 16384, -32768], dtype="<i2").tobytes()
    assert np.frombuffer(pcm16_to_float32(pcm), dtype=np.float32).tolist() == [0.0, 0.5, -1.0]
    first = json.loads(options_message("u", "en", "tiny.en", {"use_vad": False}))
    assert first["uid"] == "u" and first["use_vad"] is False and first["send_last_n_segments"] == 10
    assert whisperlive_url("http://127.0.0.1:9090") == "ws://127.0.0.1:9090/"


def test_text_lag_follows_the_finals() -> None:
    from bench.client import Arrival, SessionRecord

    conversation = build_conversation([clip("a", 1.0, "x")], target_s=0.0)
    record = SessionRecord(
        client=0,
        conversation=conversation,
        outcome="completed",
        reason="",
        started=True,
        audio_ends=(1.0, 2.0, 3.0),
        sent_at=(101.0, 102.0, 103.0),
        send_lag_s=0.0,
        arrivals=(),
        close_code=1000,
    )
    final = Final(utterance=0, text="x", start=0.5, end=1.5, language="en", confidence=0.0)
    assert text_lags(record, []) == [1.0, 2.0, 3.0]
    assert text_lags(record, [(102.5, final)]) == [1.0, 2.0, 1.5]
    with_arrival = attrs.evolve(record, arrivals=(Arrival(102.0, final),))
    assert session_figures(with_arrival).text_lags == (1.0, 0.5, 1.5)
    late = attrs.evolve(record, arrivals=(Arrival(105.5, final),))  # sampled on until then
    assert session_figures(late).text_lags == (1.0, 2.0, 3.0, 3.0, 3.0)


def test_peer_commands() -> None:
    command = peer_server_command(
        Path("/v"), "/models/tiny", threads=2, max_clients=8, extra=["--no-batch"]
    )
    assert command[0] == "/v/bin/python"
    assert command[1].endswith("bench/whisperlive_server.py")
    assert command[2:] == [
        "--model-dir", "/models/tiny", "--omp-threads", "2", "--max-clients", "8", "--no-batch",
    ]  # fmt: skip
    launcher = launcher_arguments(
        [
            "--model-dir",
            "/m",
            "--port",
            "9",
            "--batch-max-size",
            "4",
            "--option",
            "batch_beam_size=5",
        ]
    )
    options = run_options(launcher)
    assert options["faster_whisper_custom_model_path"] == "/m"
    assert options["backend"] == "faster_whisper" and options["batch_enabled"] is True
    assert (options["port"], options["batch_max_size"], options["batch_beam_size"]) == (9, 4, 5)
    assert (
        run_options(launcher_arguments(["--model-dir", "/m", "--no-batch"]))["batch_enabled"]
        is False
    )
    assert (Path(peer_model_directory("tiny.en")) / "model.bin").is_file()  # what Chorus serves
    with pytest.raises(SystemExit, match="local model directory"):
        peer_model_directory("large-v3")  # a hub name: the peer never downloads
    settings = parse_arguments(["--peer", "whisperlive", "--peer-config", '{"use_vad": false}'])
    assert settings.peer == "whisperlive" and json.loads(settings.peer_config) == {"use_vad": False}
