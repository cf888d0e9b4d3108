"""Resuming a `/v1/stream` session on a new connection (issue 23), against the real app on
loopback (hypercorn, trio-websocket), the fake model and the real VAD on real speech.

A connection is cut by closing the client's TCP socket under it (`drop`): the server sees the
connection lost, stores what it owes, and keeps the session open for `resume_s`."""

from __future__ import annotations

import io
import itertools
import json
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
from conftest import serve_app
from starlette.applications import Starlette
from support.audio_files import DATA, load, pcm16, wav_bytes
from support.fakes import FakeModel
from support.ws_client import (
    Rejection,
    connect,
    drop,
    receive_all,
    rejected,
    send_audio,
    send_json,
)
from trio_websocket import WebSocketConnection

from actors.model.port import Samples
from actors.store.actor import SessionDetail, StoreError, StoreHandle
from service.app import create_app, drain_sessions
from service.config import Settings
from service.runtime import runtime
from service.stream_client import stream_file

KEYS = {"CHORUS_API_KEYS": "alice:key-a,bob:key-b"}
REFUSED = {"error": {"code": "resume_refused", "message": "resume token not valid"}}


def speech() -> Samples:
    """Two clips, each followed by a second of silence: two utterances at least."""
    pause = np.zeros(16000, np.float32)
    return np.concatenate([load(DATA / "weather.wav"), pause, load(DATA / "library.wav"), pause])


@asynccontextmanager
async def server(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    resume_s: float = 30.0,
    database_url: str | None = None,
) -> AsyncIterator[tuple[Starlette, str]]:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    settings = Settings(
        model="fake", data_dir=tmp_path, resume_s=resume_s, pace=0, database_url=database_url
    )
    app = create_app(settings, model=FakeModel())
    async with serve_app(app) as address:
        yield app, address


async def next_frame(ws: WebSocketConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await ws.get_message())
    return frame


async def until(ws: WebSocketConnection, wanted: Any) -> list[dict[str, Any]]:
    """Frames until (and with) the first one `wanted` accepts."""
    frames: list[dict[str, Any]] = []
    with trio.fail_after(30):
        while not frames or not wanted(frames[-1]):
            frames.append(await next_frame(ws))
    return frames


async def ended(store: StoreHandle, session_id: str) -> SessionDetail:
    """The session once its row has ended."""
    with trio.fail_after(20):
        while True:
            detail = await store.get_session(session_id)
            if detail.session.ended_at is not None:
                return detail
            await trio.sleep(0.05)


def body(refusal: Rejection) -> Any:
    return json.loads(refusal.body or b"")


async def lose_mid_speech(address: str, audio: Samples, query: str = "") -> list[dict[str, Any]]:
    """Send the first clip and half the second, wait for the first final and the second's
    speech, then cut the connection; what the client saw."""
    cut = int(len(load(DATA / "weather.wav")) + 16000 + len(load(DATA / "library.wav")) * 0.6)
    async with connect(f"ws://{address}/v1/stream?token=key-a{query}") as ws:
        seen = await until(ws, lambda frame: frame["type"] == "ready")
        await send_audio(ws, audio[:cut])
        seen += await until(ws, lambda frame: frame["type"] == "final")
        first = seen[-1]["utterance"]
        seen += await until(
            ws, lambda frame: frame["type"] == "partial" and frame["utterance"] > first
        )
        await drop(ws)
    return seen


async def resume(
    address: str,
    token: str,
    after_seq: int,
    audio: Samples,
    key: str = "key-a",
    query: str = "",
) -> list[dict[str, Any]]:
    """Resume, re-send `audio`, stop; every frame of the new connection."""
    url = f"ws://{address}/v1/stream?token={key}&resume={token}&after_seq={after_seq}{query}"
    async with connect(url) as ws:
        await send_audio(ws, audio)
        await send_json(ws, {"type": "stop"})
        return await receive_all(ws)


async def test_a_lost_connection_resumes_with_nothing_lost_or_repeated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audio = speech()
    async with server(tmp_path, monkeypatch) as (app, address):
        before = await lose_mid_speech(address, audio)
        ready = before[0]
        token = ready["resume_token"]
        seen_finals = [frame for frame in before if frame["type"] == "final"]
        after_seq = max(frame["seq"] for frame in before)
        seen_end = max(frame["end"] for frame in seen_finals)
        after = await resume(address, token, after_seq, audio[round(seen_end * 16000) :])
        again = await rejected(
            f"ws://{address}/v1/stream?token=key-a&resume={token}&after_seq={after_seq}"
        )
        stored = await ended(runtime(app).store, ready["session_id"])
    resumed = after[0]
    assert resumed["type"] == "ready" and resumed["resumed"] is True
    assert resumed["session_id"] == ready["session_id"]
    assert resumed["resume_token"] not in (None, token)  # rotated
    assert again.status_code == 403 and body(again) == REFUSED  # used
    finals = seen_finals + [frame for frame in after if frame["type"] == "final"]
    replayed = [frame for frame in after if frame["type"] == "final" and frame["seq"] <= after_seq]
    assert replayed == []  # nothing the client saw comes again
    missed = [f for f in after if f["type"] == "final" and f["seq"] < resumed["seq"]]
    assert missed, "the final of the speech cut off while the client was away is replayed"
    assert resumed["audio_start"] == max(frame["end"] for frame in missed)
    assert [f["utterance"] for f in finals] == list(range(len(finals)))  # once each, in order
    seqs = [frame["seq"] for frame in finals]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    live = [frame["seq"] for frame in after[1 + len(missed) :]]
    assert live == sorted(live) and live[0] > max(resumed["seq"], after_seq)
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(finals))
    assert after[-1]["type"] == "stopped" and after[-1]["utterances"] == len(finals)
    assert after[-1]["transcript"] == " ".join(frame["text"] for frame in finals)
    assert [(u.index, u.text) for u in stored.utterances] == [
        (frame["utterance"], frame["text"]) for frame in finals
    ]
    assert stored.session.end_reason == "stop"
    assert stored.session.duration_s == pytest.approx(len(audio) / 16000, abs=0.05)


async def test_tokens_that_do_not_resume_are_refused_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with server(tmp_path, monkeypatch) as (_, address):
        async with connect(f"ws://{address}/v1/stream?token=key-a") as ws:
            lost = await next_frame(ws)
            await drop(ws)
        async with connect(f"ws://{address}/v1/stream?token=key-a") as ws:
            stopped = await next_frame(ws)
            await send_json(ws, {"type": "stop"})
            await receive_all(ws)
        base = f"ws://{address}/v1/stream"
        refusals = [
            await rejected(f"{base}?token=key-b&resume={lost['resume_token']}"),  # another key
            await rejected(f"{base}?token=key-a&resume={stopped['resume_token']}"),  # stopped
            await rejected(f"{base}?token=key-a&resume={'A' * 43}"),  # unknown
        ]
        malformed = [
            await rejected(f"{base}?token=key-a&resume=short"),
            await rejected(f"{base}?token=key-a&resume={'A' * 43}&after_seq=-1"),
            await rejected(f"{base}?token=key-a&after_seq=3"),
        ]
        # the refusals took nothing: the lost session still resumes with its own key
        async with connect(f"{base}?token=key-a&resume={lost['resume_token']}") as ws:
            resumed = await next_frame(ws)
    for refusal in refusals:
        assert refusal.status_code == 403 and body(refusal) == REFUSED
    for refusal in malformed:
        assert refusal.status_code == 400
        assert body(refusal)["error"]["code"] == "invalid_resume"
    assert resumed["resumed"] is True and resumed["session_id"] == lost["session_id"]


async def test_a_session_not_resumed_in_time_ends_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with server(tmp_path, monkeypatch, resume_s=0.6) as (app, address):
        store = runtime(app).store
        async with connect(f"ws://{address}/v1/stream?token=key-a") as ws:
            ready = await next_frame(ws)
            await send_audio(ws, load(DATA / "weather.wav"))
            await until(ws, lambda frame: frame["type"] == "partial")
            await drop(ws)
        detail = await ended(store, ready["session_id"])  # released, then swept
        expired = await rejected(
            f"ws://{address}/v1/stream?token=key-a&resume={ready['resume_token']}"
        )
    assert detail.session.end_reason == "interrupted"
    # the audio received before the connection was lost: the cut-off utterance's final ends there
    assert detail.utterances and detail.session.duration_s == detail.utterances[-1].end
    assert expired.status_code == 403 and body(expired) == REFUSED
    assert store.statistics().swept == 1


async def test_a_resume_cut_before_its_ready_resumes_again_with_the_same_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with server(tmp_path, monkeypatch) as (_, address):
        async with connect(f"ws://{address}/v1/stream?token=key-a") as ws:
            ready = await next_frame(ws)
            await drop(ws)
        url = f"ws://{address}/v1/stream?token=key-a&resume={ready['resume_token']}"
        async with connect(url) as ws:
            await drop(ws)  # the link goes before the client reads its `ready`
        async with connect(url) as ws:
            again = await next_frame(ws)
            await send_json(ws, {"type": "stop"})
            await receive_all(ws)
    assert again["type"] == "ready" and again["resumed"] is True
    assert again["session_id"] == ready["session_id"]


async def test_a_resume_the_store_cannot_answer_is_a_503_and_gives_its_slot_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_claim(*_: object) -> None:
        raise StoreError("the database is out of reach")

    async with server(tmp_path, monkeypatch) as (app, address):
        services = runtime(app)
        monkeypatch.setattr(services.store.leases, "claim", broken_claim)
        url = f"ws://{address}/v1/stream?token=key-a&resume={'A' * 43}"
        refusals = [await rejected(url) for _ in range(3)]
        sessions = services.gate.statistics().sessions
    for refusal in refusals:
        assert refusal.status_code == 503 and body(refusal)["error"]["code"] == "store_error"
        assert dict(refusal.headers)[b"retry-after"] == b"2"
    assert sessions == 0  # every refused resume gave its admission slot back


async def test_without_resume_a_lost_connection_ends_the_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with server(tmp_path, monkeypatch, resume_s=0) as (app, address):
        async with connect(f"ws://{address}/v1/stream?token=key-a") as ws:
            ready = await next_frame(ws)
            await drop(ws)
        detail = await ended(runtime(app).store, ready["session_id"])
        refused = await rejected(f"ws://{address}/v1/stream?token=key-a&resume={'A' * 43}")
    assert ready["resume_token"] is None
    assert refused.status_code == 403 and body(refused) == REFUSED
    assert detail.session.end_reason == "client_closed"


async def test_a_drained_replicas_session_resumes_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas share the store; the first drains (SIGTERM: close 1012) and lets the
    session go, and the client continues it on the second."""
    audio = speech()
    async with (
        server(tmp_path, monkeypatch) as (first, address),
        server(tmp_path, monkeypatch) as (_, other),
    ):
        async with connect(f"ws://{address}/v1/stream?token=key-a") as ws:
            ready = await next_frame(ws)
            await send_audio(ws, audio[: len(audio) // 2])
            before = await until(ws, lambda frame: frame["type"] == "final")
            assert await drain_sessions(first, timeout_s=10) == 0
            before += await receive_all(ws)
            closed = ws.closed
        finals = [frame for frame in before if frame["type"] == "final"]
        seen_end = max(frame["end"] for frame in finals)
        after = await resume(
            other, ready["resume_token"], before[-1]["seq"], audio[round(seen_end * 16000) :]
        )
        stored = await ended(runtime(first).store, ready["session_id"])
    assert closed is not None and closed.code == 1012
    assert after[0]["resumed"] is True and after[0]["session_id"] == ready["session_id"]
    finals += [frame for frame in after if frame["type"] == "final"]
    assert [f["utterance"] for f in finals] == list(range(len(finals)))
    assert [u.text for u in stored.utterances] == [f["text"] for f in finals]
    assert stored.session.end_reason == "stop"


async def test_a_session_lost_on_one_replica_resumes_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_database_url: str | None
) -> None:
    """The production case: replicas share one database (PostgreSQL, each replica with a data
    dir of its own, as on separate machines; or SQLite in one data dir). A session on the first
    loses its connection and resumes on the second, every final once; its recording goes on
    there only if the file is on its disk (else `recording_stopped`, the first part kept)."""
    audio = speech()
    url = store_database_url
    dirs = (tmp_path / "a", tmp_path / "b") if url else (tmp_path, tmp_path)
    async with (
        server(dirs[0], monkeypatch, database_url=url) as (first, address),
        server(dirs[1], monkeypatch, database_url=url) as (second, other),
    ):
        before = await lose_mid_speech(address, audio, "&record=true")
        ready = before[0]
        seen_finals = [frame for frame in before if frame["type"] == "final"]
        seen_end = max(frame["end"] for frame in seen_finals)
        after_seq = max(frame["seq"] for frame in before)
        rest = audio[round(seen_end * 16000) :]
        after = await resume(other, ready["resume_token"], after_seq, rest, query="&record=true")
        stored = await ended(runtime(second).store, ready["session_id"])
        on_first = await runtime(first).store.get_session(ready["session_id"])
        path = runtime(first).store.audio_path(ready["session_id"])
    assert after[0]["resumed"] is True and after[0]["session_id"] == ready["session_id"]
    finals = seen_finals + [frame for frame in after if frame["type"] == "final"]
    assert [f["utterance"] for f in finals] == list(range(len(finals)))  # once each, in order
    assert not [f for f in after if f["type"] == "final" and f["seq"] <= after_seq]
    assert [(u.index, u.text) for u in stored.utterances] == [
        (frame["utterance"], frame["text"]) for frame in finals
    ]
    assert on_first == stored  # one database
    assert stored.session.end_reason == "stop"
    assert stored.session.duration_s == pytest.approx(len(audio) / 16000, abs=0.05)
    errors = [frame["code"] for frame in after if frame["type"] == "error"]
    assert errors == (["recording_stopped"] if url else [])
    with wave.open(str(path), "rb") as recording:  # playable
        frames = recording.getnframes()
    if url:  # what the first replica heard before the connection was lost
        assert round(seen_end * 16000) <= frames < len(audio)
    else:  # the whole session's audio, once
        assert frames == len(audio)


async def test_chorus_stream_resumes_when_the_server_cuts_its_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reference client, cut off by a draining server (1012) after its first final,
    resumes the session and prints every final once."""
    path = tmp_path / "speech.wav"
    path.write_bytes(wav_bytes(np.concatenate([speech(), speech()])))
    out = io.StringIO()
    async with server(tmp_path, monkeypatch) as (app, address):
        async with trio.open_nursery() as nursery:
            status: list[int] = []

            async def stream() -> None:
                url = f"ws://{address}/v1/stream?token=key-a"
                status.append(await stream_file(url, path, 4.0, 100, None, None, out))

            nursery.start_soon(stream)
            with trio.fail_after(30):
                while True:
                    if "]" in out.getvalue():  # a final printed
                        break
                    await trio.sleep(0.05)
            (live,) = runtime(app).live.values()
            live.stop("server_shutdown", 1012)
        (session,) = (await runtime(app).store.list_sessions()).sessions
        stored = await ended(runtime(app).store, session.id)
    assert status == [0]
    assert "resuming" in capsys.readouterr().err
    printed = [line for line in out.getvalue().splitlines() if line.startswith("[")]
    assert printed == [
        f"[{u.start:7.2f} → {u.end:7.2f}] {u.text}" for u in stored.utterances if u.text
    ]
    assert stored.session.end_reason == "stop" and len(stored.utterances) >= 4


async def test_a_resumed_recording_goes_on_in_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The WAV holds the session's audio once, in place: what the first connection heard past
    the last final stored is cut, and the resumed connection's audio goes on from there."""
    audio = speech()
    async with server(tmp_path, monkeypatch) as (app, address):
        before = await lose_mid_speech(address, audio, "&record=true")
        ready = before[0]
        seen_end = max(frame["end"] for frame in before if frame["type"] == "final")
        rest = audio[round(seen_end * 16000) :]
        last_seq = max(frame["seq"] for frame in before)
        after = await resume(address, ready["resume_token"], last_seq, rest, query="&record=true")
        await ended(runtime(app).store, ready["session_id"])
        path = runtime(app).store.audio_path(ready["session_id"])
    assert not [frame for frame in after if frame["type"] == "error"]
    with wave.open(str(path), "rb") as recording:
        recorded = np.frombuffer(recording.readframes(recording.getnframes()), "<i2")
    expected = np.frombuffer(pcm16(audio), "<i2")
    assert len(recorded) == len(expected)
    # the same audio, except within the millisecond the session's clock is kept to (final
    # times are in ms): a few samples around where the resumed connection went on
    wrong = np.nonzero(np.abs(recorded.astype(np.int32) - expected) > 1)[0]
    resumed_at = round(after[0]["audio_start"] * 16000)
    assert all(resumed_at - 16 <= index < resumed_at for index in wrong)


async def test_a_resume_is_not_a_new_recording_for_the_rate_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_RECORDINGS_PER_MINUTE", "1")
    async with server(tmp_path, monkeypatch) as (_, address):
        async with connect(f"ws://{address}/v1/stream?token=key-a") as ws:
            lost = await next_frame(ws)
            await drop(ws)
        async with connect(
            f"ws://{address}/v1/stream?token=key-a&resume={lost['resume_token']}"
        ) as ws:
            resumed = await next_frame(ws)
            await send_json(ws, {"type": "stop"})
            await receive_all(ws)
        limited = await rejected(f"ws://{address}/v1/stream?token=key-a")
    assert resumed["resumed"] is True
    assert limited.status_code == 429
