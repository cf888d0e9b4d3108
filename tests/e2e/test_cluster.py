"""The cluster of issue 23 on loopback, every part real: PostgreSQL, Redis, HAProxy running
`deploy/haproxy.cfg`, and two `chorus serve` processes on tiny.en sharing one recordings
directory. Real speech goes through HAProxy; the replica holding the session is killed with
SIGKILL mid-session; the client resumes through HAProxy on the other replica, and every final
it was sent is in the store once, with the rest of the speech transcribed once too.

Each replica admits one live session (`CHORUS_MAX_SESSIONS=1`), so its agent says `drain` while
it holds one, and with the other replica dead HAProxy refuses a new session at the edge. The
killed replica is then started again, and both list the same sessions and serve the same
recording.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import numpy as np
import pytest
import trio
from support.agent_client import ask_agent
from support.audio_files import DATA, load
from support.haproxy_server import Haproxy, Replica, start_haproxy
from support.postgres_server import PostgresServer
from support.redis_server import start_redis_server
from support.servers import free_port, start_server, stop
from support.ws_client import connect, drop, receive_all, rejected, send_audio, send_json
from trio_websocket import WebSocketConnection

from actors.model.port import Samples

KEY = "cluster-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
WORDS = {"weather", "sunny", "breeze", "library", "books", "friday"}


@attrs.define
class Node:
    """One replica: its ports, its data dir and its process (None while it is down)."""

    replica: Replica
    data_dir: Path
    process: trio.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.replica.port}"


def speech() -> Samples:
    """Two clips, each followed by a second of silence: two utterances at least."""
    pause = np.zeros(16000, np.float32)
    return np.concatenate([load(DATA / "weather.wav"), pause, load(DATA / "library.wav"), pause])


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with start_redis_server(tmp_path) as server:
        yield server.url


@asynccontextmanager
async def cluster(
    postgres_server: PostgresServer, redis_url: str, tmp_path: Path
) -> AsyncIterator[tuple[list[Node], Haproxy, dict[str, str]]]:
    shared = {
        "DATABASE_URL": postgres_server.create_database(),
        "REDIS_URL": redis_url,
        "CHORUS_API_KEYS": f"alice:{KEY}",
        "CHORUS_RECORDINGS_DIR": str(tmp_path / "recordings"),
        "CHORUS_TRUSTED_PROXIES": "127.0.0.2/32",
        "CHORUS_RESUME_S": "30",
        "CHORUS_MAX_SESSIONS": "1",
    }
    nodes = [Node(Replica(free_port(), free_port()), tmp_path / f"replica{i}") for i in (1, 2)]
    async with AsyncExitStack() as stack:
        for node in nodes:
            await start(node, shared)
            stack.push_async_callback(halt, node)
        haproxy = await stack.enter_async_context(
            start_haproxy(tmp_path, [node.replica for node in nodes], source="127.0.0.2")
        )
        await haproxy.wait_for("chorus1", "UP")
        await haproxy.wait_for("chorus2", "UP")
        yield nodes, haproxy, shared


async def start(node: Node, shared: dict[str, str]) -> None:
    env = {**shared, "CHORUS_AGENT_PORT": str(node.replica.agent_port)}
    node.process = await start_server(node.data_dir, node.replica.port, env)


async def halt(node: Node) -> None:
    if node.process is not None:
        await stop(node.process)
        node.process = None


async def until(ws: WebSocketConnection, wanted: Any) -> list[dict[str, Any]]:
    """Frames until (and with) the first one `wanted` accepts."""
    frames: list[dict[str, Any]] = []
    with trio.fail_after(60):
        while not frames or not wanted(frames[-1]):
            frames.append(json.loads(await ws.get_message()))
    return frames


async def holder(nodes: list[Node]) -> Node:
    """The running replica whose agent says it is full: the one holding the session."""
    running = [node for node in nodes if node.process is not None]
    replies = {node.replica.port: await ask_agent(node.replica.agent_port) for node in running}
    full = [node for node in running if replies[node.replica.port] == b"drain\n"]
    assert len(full) == 1, replies
    return full[0]


async def settled(haproxy: Haproxy, wanted: dict[str, str]) -> None:
    """Until HAProxy holds each server in a status starting with the one `wanted` names."""
    with trio.fail_after(30):
        while True:
            servers = await haproxy.servers()
            if all(servers[name][0].startswith(status) for name, status in wanted.items()):
                return
            await trio.sleep(0.1)


async def test_a_session_survives_its_replica_being_killed(
    postgres_server: PostgresServer, redis_url: str, tmp_path: Path
) -> None:
    audio = speech()
    cut = len(load(DATA / "weather.wav")) + 16000 + len(load(DATA / "library.wav")) // 2
    async with cluster(postgres_server, redis_url, tmp_path) as (nodes, haproxy, shared):
        edge = f"ws://127.0.0.1:{haproxy.port}/v1/stream?token={KEY}&record=true"
        async with connect(edge) as ws:
            before = await until(ws, lambda frame: frame["type"] == "ready")
            await send_audio(ws, audio[:cut], pace=1.5)
            before += await until(ws, lambda frame: frame["type"] == "final")
            first = before[-1]["utterance"]
            before += await until(
                ws, lambda frame: frame["type"] == "partial" and frame["utterance"] > first
            )
            dead = await holder(nodes)
            assert dead.process is not None
            dead.process.kill()  # SIGKILL: no drain, no last words
            await dead.process.wait()
            dead.process = None
            await drop(ws)

        ready = before[0]
        seen_finals = [frame for frame in before if frame["type"] == "final"]
        after_seq = max(frame["seq"] for frame in before)
        seen_end = max(frame["end"] for frame in seen_finals)
        resume = f"{edge}&resume={ready['resume_token']}&after_seq={after_seq}"
        async with connect(resume) as ws:
            after = await until(ws, lambda frame: frame["type"] == "ready")
            survivor = await holder(nodes)  # the other one, now full: its agent says drain
            assert survivor is not dead
            names = [f"chorus{nodes.index(node) + 1}" for node in (dead, survivor)]
            await settled(haproxy, {names[0]: "DOWN", names[1]: "DRAIN"})
            refused = await rejected(f"ws://127.0.0.1:{haproxy.port}/v1/stream?token={KEY}")
            await send_audio(ws, audio[round(seen_end * 16000) :], pace=1.5)
            await send_json(ws, {"type": "stop"})
            after += await receive_all(ws)

        resumed = after[0]
        assert resumed["resumed"] is True and resumed["session_id"] == ready["session_id"]
        assert refused.status_code == 503 and dict(refused.headers).get(b"retry-after") == b"10"
        resumed_finals = [frame for frame in after if frame["type"] == "final"]
        assert seen_finals and resumed_finals  # speech was transcribed on both replicas
        finals = seen_finals + resumed_finals
        indexes = [frame["utterance"] for frame in finals]
        assert indexes == sorted(set(indexes)), indexes  # none twice, in order
        seqs = [frame["seq"] for frame in finals]
        assert seqs == sorted(set(seqs))
        said = {word.strip(".,!?").lower() for frame in finals for word in frame["text"].split()}
        assert len(WORDS & said) >= 5, said

        await start(dead, shared)  # back, as a restart would bring it
        await haproxy.wait_for(f"chorus{nodes.index(dead) + 1}", "UP")
        session_id = ready["session_id"]
        views = []
        recordings = []
        async with httpx.AsyncClient(headers=HEADERS, timeout=30) as http:
            for node in nodes:
                listing = (await http.get(f"{node.url}/v1/sessions")).json()
                detail = (await http.get(f"{node.url}/v1/sessions/{session_id}")).json()
                views.append(([s["id"] for s in listing["sessions"]], detail))
                recordings.append(await http.get(f"{node.url}/v1/sessions/{session_id}/audio"))
        assert views[0] == views[1]
        ids, detail = views[0]
        assert ids == [session_id]
        stored = [(u["index"], u["text"]) for u in detail["utterances"]]
        assert stored == [(frame["utterance"], frame["text"]) for frame in finals]
        assert detail["ended_at"] is not None
        assert [r.status_code for r in recordings] == [200, 200]
        assert recordings[0].content == recordings[1].content
        assert len(recordings[0].content) > 32000 * (cut / 16000)  # the audio before the kill
