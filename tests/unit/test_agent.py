"""The HAProxy agent: the reply as a pure function of admission's snapshot, and the TCP server
that answers each connection with one line and closes, whatever the peer sends."""

from __future__ import annotations

import pytest
import trio
from support.agent_client import ask_agent

from service import agent
from service.agent import READ_LIMIT, open_agent
from service.config import Settings
from service.policy.agent import AgentSnapshot, agent_reply
from service.policy.capacity import CapacityMeter


def snapshot(
    live: int = 0,
    headroom: int = 8,
    *,
    refusing: bool = False,
    draining: bool = False,
    failed: bool = False,
) -> AgentSnapshot:
    return AgentSnapshot(live, headroom, refusing=refusing, draining=draining, failed=failed)


@pytest.mark.parametrize(
    ("state", "line"),
    [
        (snapshot(live=0, headroom=8), b"up ready 100%\n"),
        (snapshot(live=4, headroom=4), b"up ready 50%\n"),
        (snapshot(live=7, headroom=1), b"up ready 13%\n"),  # rounded up
        (snapshot(live=999, headroom=1), b"up ready 1%\n"),  # never 0% (a drain) while it admits
        (snapshot(live=8, headroom=0), b"drain\n"),  # full
        (snapshot(live=2, headroom=6, refusing=True), b"drain\n"),  # behind or finals slow
        (snapshot(live=2, headroom=6, draining=True), b"drain\n"),  # shutting down
        (snapshot(live=0, headroom=0, draining=True), b"drain\n"),
        (snapshot(live=0, headroom=8, failed=True), b"down\n"),  # an actor died
        (snapshot(live=3, headroom=0, draining=True, failed=True), b"down\n"),
    ],
)
def test_the_reply_is_one_ascii_line_of_haproxy_words(state: AgentSnapshot, line: bytes) -> None:
    reply = agent_reply(state)
    assert reply == line
    assert reply.count(b"\n") == 1 and reply.isascii()


def test_the_cold_allowance_is_what_is_left_of_the_cold_sessions() -> None:
    assert CapacityMeter(cold_sessions=3).allowance(1) == 2
    assert CapacityMeter(cold_sessions=3).allowance(5) == 0
    assert CapacityMeter(cold_sessions=None).allowance(5) is None  # cold and unlimited
    assert CapacityMeter(cold_sessions=3).admits(2) and not CapacityMeter(cold_sessions=3).admits(3)


async def test_each_connection_gets_one_line_then_the_close() -> None:
    replies = iter([b"up ready 100%\n", b"drain\n"])
    async with open_agent("127.0.0.1", 0, lambda: next(replies)) as port:
        assert await ask_agent(port) == b"up ready 100%\n"
        assert await ask_agent(port) == b"drain\n"  # asked afresh on each connection


async def test_a_peer_that_sends_is_answered_and_one_that_floods_harms_no_one() -> None:
    async with open_agent("127.0.0.1", 0, lambda: b"drain\n") as port:
        assert await ask_agent(port, b"chorus-agent-send\n") == b"drain\n"  # agent-send
        flood = b"\x00garbage\xff" * (4 * READ_LIMIT)
        assert (await ask_agent(port, flood)) in (b"drain\n", b"")  # closed, maybe reset
        assert await ask_agent(port) == b"drain\n"  # the next one is answered as ever


async def test_connections_over_the_cap_are_closed_unanswered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two peers that neither send nor close hold both handlers; a third is closed at once;
    once they go, the agent answers again."""
    monkeypatch.setattr(agent, "LINGER_S", 60.0)  # the holders hold for the whole test
    async with open_agent("127.0.0.1", 0, lambda: b"drain\n", max_connections=2) as port:
        holders = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
        for holder in holders:
            assert await holder.receive_some() == b"drain\n"  # answered, handler lingering
        assert await ask_agent(port) == b""  # over the cap: closed, no reply
        for holder in holders:
            await holder.aclose()
        answers = [await ask_agent(port) for _ in range(50)]
    assert b"drain\n" in answers  # a handler was free again


@pytest.mark.parametrize("wrong", ["-1", "65536", "eighty"])
def test_an_impossible_agent_port_is_refused_with_the_settings(wrong: str) -> None:
    with pytest.raises(ValueError, match=r"agent_port|invalid literal"):
        Settings.from_env({"CHORUS_AGENT_PORT": wrong})
    with pytest.raises(ValueError, match="drain_notice_s"):
        Settings(drain_notice_s=-1)
