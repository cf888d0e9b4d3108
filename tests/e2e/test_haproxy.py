"""Two replicas behind a real HAProxy configured by `deploy/haproxy.cfg` (issue 23): sessions
spread over both, a full replica's agent steers new sessions to the other, a full cluster is
refused at the edge with `Retry-After`, `X-Forwarded-For` is believed from the balancer only,
and a draining replica finishes its sessions' finals and closes them with 1012 while new ones
go elsewhere. The replicas run in this process on the fake model (what is tested is routing);
the balancer reaches them from 127.0.0.2, the only address they trust, and the test's own
clients come from 127.0.0.1 or 127.0.0.3."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import attrs
import httpx
import trio
import trio.testing
from conftest import serve_app
from starlette.applications import Starlette
from support.agent_client import ask_agent
from support.audio_files import DATA, load
from support.fakes import FakeModel
from support.haproxy_server import Haproxy, Replica, haproxy_binary, start_haproxy
from support.servers import free_port
from support.ws_client import (
    connect,
    connect_from,
    receive_all,
    rejected,
    send_audio,
    send_json,
)
from trio_websocket import WebSocketConnection

from service.app import create_app, drain_sessions
from service.config import Settings
from service.policy.security import SecurityConfig
from service.runtime import runtime

BALANCER = "127.0.0.2"
CLIENT = "127.0.0.3"


@attrs.frozen
class Cluster:
    apps: tuple[Starlette, Starlette]
    addresses: tuple[str, str]  # each replica's host:port
    agents: tuple[int, int]
    edge: Haproxy

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.edge.port}/v1/stream"

    def holder(self, session_id: str) -> int:
        """Which replica (0 or 1) holds the live session `session_id`."""
        (index,) = [i for i, app in enumerate(self.apps) if session_id in runtime(app).live]
        return index


@asynccontextmanager
async def cluster(tmp_path: Path, settings: Settings) -> AsyncIterator[Cluster]:
    haproxy_binary()  # skip (or fail under CHORUS_REQUIRE_HAPROXY=1) before starting anything
    security = SecurityConfig(trusted_proxies=(ipaddress.ip_network(f"{BALANCER}/32"),))
    agents = (free_port(), free_port())
    apps = tuple(
        create_app(
            attrs.evolve(settings, model="fake", data_dir=tmp_path / f"r{i}", agent_port=port),
            model=FakeModel(),
            security=security,
        )
        for i, port in enumerate(agents)
    )
    async with AsyncExitStack() as stack:
        addresses = [await stack.enter_async_context(serve_app(app)) for app in apps]
        replicas = [
            Replica(int(address.rpartition(":")[2]), agent)
            for address, agent in zip(addresses, agents, strict=True)
        ]
        edge = await stack.enter_async_context(start_haproxy(tmp_path, replicas, source=BALANCER))
        yield Cluster((apps[0], apps[1]), (addresses[0], addresses[1]), agents, edge)


async def session_id(ws: WebSocketConnection) -> str:
    with trio.fail_after(10):
        ready = json.loads(await ws.get_message())
    assert ready["type"] == "ready"
    return str(ready["session_id"])


async def stop(ws: WebSocketConnection) -> list[dict[str, object]]:
    await send_json(ws, {"type": "stop"})
    return await receive_all(ws)


async def test_sessions_through_haproxy_spread_over_both_replicas(tmp_path: Path) -> None:
    async with cluster(tmp_path, Settings()) as chorus, AsyncExitStack() as sessions:
        held = []
        for _ in range(4):
            ws = await sessions.enter_async_context(connect(chorus.url))
            held.append(chorus.holder(await session_id(ws)))
        assert sorted(held) == [0, 0, 1, 1]  # leastconn, both at 100% until they hold some
        for name in ("chorus1", "chorus2"):  # each has 6 of its 8 cold sessions free
            await chorus.edge.wait_for(name, "UP", weight=75)
        async with httpx.AsyncClient() as http:  # plain HTTP passes too
            health = await http.get(f"http://127.0.0.1:{chorus.edge.port}/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        garden = load(DATA / "garden.wav")
        await send_audio(ws, garden)  # the upgraded connection carries a whole session
        frames = await stop(ws)
        assert any(frame["type"] == "final" for frame in frames)


async def test_a_full_replica_drains_and_a_full_cluster_is_refused_at_the_edge(
    tmp_path: Path,
) -> None:
    names = ("chorus1", "chorus2")
    async with cluster(tmp_path, Settings(admission_cold_sessions=1)) as chorus:
        async with connect(chorus.url) as first:
            full = chorus.holder(await session_id(first))
            assert await ask_agent(chorus.agents[full]) == b"drain\n"
            await chorus.edge.wait_for(names[full], "DRAIN (agent)")
            async with connect(chorus.url) as second:
                assert chorus.holder(await session_id(second)) == 1 - full
                await chorus.edge.wait_for(names[1 - full], "DRAIN (agent)")
                refusal = await rejected(chorus.url)
                assert refusal.status_code == 503
                assert dict(refusal.headers)[b"retry-after"] == b"10"
                assert b"every replica is full" in (refusal.body or b"")  # the balancer's own
                await stop(second)
            await chorus.edge.wait_for(names[1 - full], "UP")  # room again: `up ready 100%`
            async with connect(chorus.url) as third:
                assert chorus.holder(await session_id(third)) == 1 - full
                await stop(third)
            await stop(first)
        await chorus.edge.wait_for(names[full], "UP")
        assert (await chorus.edge.servers())[names[full]] == ("UP", 100)  # `up ready 100%`


async def test_forwarded_for_is_believed_from_the_balancer_only(tmp_path: Path) -> None:
    async with cluster(tmp_path, Settings()) as chorus:
        edge = chorus.edge.port
        async with connect_from(CLIENT, "127.0.0.1", edge, "/v1/stream") as ws:
            through = await session_id(ws)
            replica = chorus.holder(through)
            await stop(ws)
        spoofed = [("X-Forwarded-For", "198.51.100.7")]
        host, _, port = chorus.addresses[0].rpartition(":")
        async with connect_from("127.0.0.1", host, int(port), "/v1/stream", spoofed) as ws:
            direct = await session_id(ws)
            await stop(ws)
        async with httpx.AsyncClient() as http:
            seen = await http.get(f"http://{chorus.addresses[replica]}/v1/sessions/{through}")
            claimed = await http.get(f"http://{chorus.addresses[0]}/v1/sessions/{direct}")
    assert seen.json()["client"] == f"ip:{CLIENT}"  # the original client, not the balancer
    assert claimed.json()["client"] == "ip:127.0.0.1"  # its own X-Forwarded-For is ignored


async def test_a_draining_replica_finishes_its_finals_and_new_sessions_go_elsewhere(
    tmp_path: Path,
) -> None:
    garden = load(DATA / "garden.wav")
    names = ("chorus1", "chorus2")
    async with (
        cluster(tmp_path, Settings(drain_notice_s=3.0)) as chorus,
        connect(chorus.url) as ws,
    ):
        leaving = chorus.holder(await session_id(ws))
        live = runtime(chorus.apps[leaving]).live
        await send_audio(ws, garden[: len(garden) * 2 // 3])  # mid-utterance
        with trio.fail_after(10):
            while not any(s.statistics().received_s for s in live.values()):  # noqa: ASYNC110
                await trio.sleep(0.01)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_sessions, chorus.apps[leaving], 10.0)
            await trio.testing.wait_all_tasks_blocked()
            assert await ask_agent(chorus.agents[leaving]) == b"drain\n"
            await chorus.edge.wait_for(names[leaving], "DRAIN (agent)")
            assert ws.closed is None  # the balancer knew before the session was closed
            async with connect(chorus.url) as newcomer:
                assert chorus.holder(await session_id(newcomer)) == 1 - leaving
                await stop(newcomer)
            frames = await receive_all(ws)
    kinds = [frame["type"] for frame in frames]
    assert "final" in kinds and kinds[-1] == "stopped"
    assert ws.closed is not None and ws.closed.code == 1012


async def test_a_refusal_before_the_agent_has_spoken_is_tried_on_the_other_replica(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, Settings(admission_cold_sessions=1)) as chorus:
        for name in ("chorus1", "chorus2"):  # as if the agents were slow: weights stand still
            await chorus.edge.ask(f"disable agent chorus/{name}")
        await chorus.edge.ask("set weight chorus/chorus2 1")  # chorus1 is HAProxy's first pick
        async with connect(f"ws://{chorus.addresses[0]}/v1/stream") as direct:  # chorus1 is full
            await session_id(direct)
            async with connect(chorus.url) as ws:  # chorus1 answers 503: tried on chorus2
                assert chorus.holder(await session_id(ws)) == 1
                await stop(ws)
            await stop(direct)
        counts = await chorus.edge.statistics("chorus1")
    assert counts["wretr"] == "1" and counts["wredis"] == "1"  # its 503 went elsewhere
