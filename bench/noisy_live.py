"""`python -m bench.noisy --live N`: the streaming side measured through a real server.

The simulated streaming path (`bench.noisy.stream_clip`) is what one session's finals are
without a clock; this is what they are when a real `chorus serve` hears the conversations in
real time, `sessions` at once (the issue's "4 sessions"), drafts, admission and batching
included. Every conversation goes to the server as 16 kHz PCM16 of the condition's audio: for
the telephone conditions that is the 8 kHz μ-law already decoded by Chorus's own decoder, the
very samples the server makes of `encoding=mulaw&sample_rate=8000`.

One trio run, one server: `run_live` starts it (`bench.server.open_server`, its log beside the
report), warms it up, streams the conversations in waves of `sessions`, and returns each
conversation's finals in utterance order. A refused or failed session is an error: accuracy
under a server that dropped speech would not be accuracy.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

import trio

from bench.audio import SAMPLE_RATE
from bench.client import StreamOptions, stream_conversation, stream_url
from bench.conversation import Conversation
from bench.server import open_server
from protocol.native import Final


async def stream_wave(
    url: str, conversations: Sequence[Conversation], options: StreamOptions
) -> list[list[Final]]:
    """Stream `conversations` at once; each one's finals, ordered by utterance."""
    results: list[list[Final]] = [[] for _ in conversations]

    async def one(index: int, conversation: Conversation) -> None:
        record = await stream_conversation(url, conversation, options, client=index)
        if record.outcome != "completed":
            raise RuntimeError(f"session {index} {record.outcome}: {record.reason}")
        finals = [a.frame for a in record.arrivals if isinstance(a.frame, Final)]
        results[index] = sorted(finals, key=lambda final: final.utterance)

    async with trio.open_nursery() as nursery:
        for index, conversation in enumerate(conversations):
            nursery.start_soon(one, index, conversation)
    return results


async def run_live(
    conversations: Sequence[Conversation],
    *,
    model: str,
    sessions: int,
    server_cmd: str,
    server_args: str,
    log_path: Path,
) -> list[list[Final]]:
    """Each conversation's finals from one real server, `sessions` streamed at a time."""
    command = [*shlex.split(server_cmd), "--model", model, *shlex.split(server_args)]
    finals: list[list[Final]] = []
    async with open_server(command, log_path=log_path) as server:
        url = stream_url(server.url)
        silence = Conversation(pcm=bytes(SAMPLE_RATE * 2 * 2), spans=())  # loads the model
        await stream_wave(url, [silence], StreamOptions(speed=4.0, connect_timeout_s=120.0))
        for begin in range(0, len(conversations), sessions):
            wave = conversations[begin : begin + sessions]
            finals += await stream_wave(url, wave, StreamOptions(drain_s=60.0))
            print(f"live: {len(finals)}/{len(conversations)} conversations", flush=True)
    return finals
