"""Shared by the dialect, upload and CLI tests: a server on 127.0.0.1:0 with every dialect and
upload route on the real tiny.en model (conftest's `tiny_model`), real speech, clip helpers."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import re
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import numpy as np
import trio
from conftest import serve_app
from starlette.applications import Starlette
from support.audio_files import DATA as DATA  # the tests import it from here too
from support.audio_files import SPEECH
from support.ws_client import connect
from trio_websocket import ConnectionClosed

from actors.model.port import SpeechModel


def speech(name: str) -> Path:
    """A clip of the real speech set (tests/data/speech, or `CHORUS_SPEECH_DIR`)."""
    return SPEECH / name


def reference(name: str) -> str:
    with (SPEECH / "en_wer.tsv").open() as table:
        for row in csv.DictReader(table, delimiter="\t"):
            if row["file"] == name:
                return row["reference"]
    raise KeyError(name)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def overlap(hypothesis: str, expected: str) -> float:
    """Share of the expected words found in the hypothesis (bag of words)."""
    wanted = words(expected)
    return len(wanted & words(hypothesis)) / max(1, len(wanted))


def pcm16_file(path: Path) -> bytes:
    """16 kHz mono s16le of any audio file."""
    from actors.audio.file_decoder import decode_file

    samples = decode_file(path)
    return bytes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def dialect_app(model: SpeechModel, data_dir: Path, *, pace: float = 1.5) -> Starlette:
    """The app as the brief builds it: every dialect and upload route, the real model."""
    from service.app import create_app
    from service.config import Settings

    return create_app(Settings(model="tiny.en", data_dir=data_dir, pace=pace), model=model)


@asynccontextmanager
async def serving(model: SpeechModel, data_dir: Path, *, pace: float = 1.5) -> AsyncIterator[str]:
    """`dialect_app` on 127.0.0.1:0; yields `host:port`."""
    async with serve_app(dialect_app(model, data_dir, pace=pace)) as address:
        yield address


def load_make_clips() -> ModuleType:
    """tests/data/make_clips.py (not a package), for `encode_clip`."""
    spec = importlib.util.spec_from_file_location("make_clips", DATA / "make_clips.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@attrs.frozen
class Exchange:
    messages: list[Any]  # JSON text messages decoded; binary messages as bytes
    close_code: int | None

    def of_type(self, kind: str, key: str = "type") -> list[dict[str, Any]]:
        return [m for m in self.messages if isinstance(m, dict) and m.get(key) == kind]


async def exchange(
    url: str,
    outgoing: Iterable[str | bytes],
    *,
    pace_s: float = 0.0,
    limit_s: float = 240.0,
) -> Exchange:
    """Send `outgoing` in order (`pace_s` apart), read every message until the server closes."""
    received: list[Any] = []
    close_code: int | None = None
    with trio.fail_after(limit_s):  # a guard against a hang, not a timing assertion
        async with connect(url) as socket:

            async def read() -> None:
                nonlocal close_code
                try:
                    while True:
                        message = await socket.get_message()
                        received.append(
                            json.loads(message) if isinstance(message, str) else message
                        )
                except ConnectionClosed as closed:
                    assert closed.reason is not None
                    close_code = closed.reason.code

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                for message in outgoing:
                    with contextlib.suppress(ConnectionClosed):
                        await socket.send_message(message)
                    if pace_s:
                        await trio.sleep(pace_s)
    return Exchange(received, close_code)


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[offset : offset + size] for offset in range(0, len(data), size)]


def silence(seconds: float) -> bytes:
    """`seconds` of 16 kHz PCM16 silence."""
    return bytes(int(seconds * 16000) * 2)


def message_kinds(messages: list[Any], key: str = "type") -> list[str]:
    """The `key` of each JSON message, in order (binary messages skipped)."""
    return [m[key] for m in messages if isinstance(m, dict)]


def deepgram_client(address: str) -> Any:
    """The official Deepgram client, unmodified, with every base URL on the local server."""
    from deepgram import DeepgramClient
    from deepgram.environment import DeepgramClientEnvironment

    environment = DeepgramClientEnvironment(
        base=f"http://{address}",
        production=f"ws://{address}",
        agent=f"ws://{address}",
        agent_rest=f"http://{address}",
    )
    return DeepgramClient(api_key="local-test", environment=environment)
