"""Attacks on the per-byte and per-client bounds (issue 11, M4 and M5), kept so they stay fixed.

M4: a fragmented MP4 of tiny `moof`/`mdat` pairs once cost an FFmpeg open per fragment (~2 s
of CPU per MiB of 130-byte fragments); now FFmpeg reads the init segment once and fragments
are cut by their `trun`, so the tests count FFmpeg opens, not seconds. M5: a session refused by
the session caps spends no rate-limit token, and without keys an IPv6 /64 is one client.
"""

from __future__ import annotations

import importlib.util
import io
import json
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from ipaddress import ip_network
from pathlib import Path
from types import ModuleType
from typing import Any

import av
import numpy as np
import pytest
import trio
import trio.testing
from conftest import serve_app
from support.audio_files import DATA
from support.fakes import FakeModel
from support.ws_client import encoded_headers, receive_all, rejected, send_json
from trio_websocket import WebSocketConnection, open_websocket_url

from actors.audio.demux_ffmpeg import Mp4FragmentDemuxer
from actors.audio.file_decoder import UndecodableAudio, decode_file
from actors.audio.stream_decoder import StreamingDecoder
from actors.limiter import LimiterConfig, RateLimits
from service.app import create_app
from service.config import Settings
from service.policy.limits import Limits
from service.policy.security import SecurityConfig
from service.runtime import runtime


def _make_clips() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_clips", DATA / "make_clips.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_clips = _make_clips()


def fragmented_mp4(movflags: str, *, silence_s: float = 0.0, **options: str) -> bytes:
    """AAC in fragmented MP4 at 48 kHz: our speech clip, or `silence_s` of silence."""
    mono = decode_file(DATA / "speech_44k_mono.flac", target_rate=48000)
    if silence_s:
        mono = np.zeros(int(48000 * silence_s), np.float32)
    encoded: bytes = make_clips.encode_clip(
        mono[np.newaxis, :], 48000, container="mp4", codec="aac",
        container_options={"movflags": movflags, **options},
    )  # fmt: skip
    return encoded


STREAMS: dict[str, Callable[[], bytes]] = {
    # Safari's MediaRecorder with a 1 s timeslice: fragments of ~1 s, offsets from the moof
    "safari-like": lambda: fragmented_mp4(
        "empty_moov+default_base_moof+frag_keyframe", frag_duration="1000000"
    ),
    # one AAC frame a fragment, offsets absolute in the stream (tfhd base-data-offset)
    "every-frame-absolute": lambda: fragmented_mp4("empty_moov+frag_every_frame"),
    # the attack: a minute of silence as ~130-byte fragments, one 6-byte frame each
    "tiny-fragments": lambda: fragmented_mp4(
        "empty_moov+default_base_moof+frag_every_frame", silence_s=60
    ),
}


def whole_file_packets(data: bytes) -> list[bytes]:
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.audio[0]
        return [bytes(packet) for packet in container.demux(stream) if packet.size]


@pytest.fixture
def ffmpeg_opens(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts `av.open` calls from here on (the only way the demuxers open FFmpeg's demuxer)."""
    opens = [0]
    original = av.open

    def counting(*args: Any, **kwargs: Any) -> Any:
        opens[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(av, "open", counting)
    yield opens


# -- M4: fragmented MP4 ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(STREAMS))
def test_fragmented_mp4_opens_ffmpeg_once_and_cuts_the_same_packets(
    name: str, ffmpeg_opens: list[int]
) -> None:
    data = STREAMS[name]()
    assert data.count(b"moof") >= 5
    expected = whole_file_packets(data)
    for chunk in (100, 4096):
        ffmpeg_opens[0] = 0
        demuxer, packets = Mp4FragmentDemuxer(), []
        for position in range(0, len(data), chunk):
            packets += demuxer.feed(data[position : position + chunk])
        assert ffmpeg_opens[0] == 1  # the init segment, not one per fragment
        assert packets == expected  # the same audio as FFmpeg demuxing the whole file


def test_tiny_fragments_decode_in_bounded_work(ffmpeg_opens: list[int]) -> None:
    """A minute of 130-byte fragments through the live decoder: one FFmpeg open for the whole
    stream, one decode per AAC frame (no per-fragment work beyond cutting its samples)."""
    data = STREAMS["tiny-fragments"]()
    frames = len(whole_file_packets(data))
    ffmpeg_opens[0] = 0
    decoder = StreamingDecoder()
    decodes = [0]
    decode = decoder._decode

    def counting(payload: bytes | memoryview | None) -> Any:
        decodes[0] += 1
        return decode(payload)

    decoder._decode = counting  # type: ignore[method-assign]
    samples = sum(len(decoder.feed(data[at : at + 4096])) for at in range(0, len(data), 4096))
    samples += len(decoder.flush())
    assert data.count(b"moof") > 2500
    assert ffmpeg_opens[0] == 1
    assert decodes[0] == frames + 1  # and one drain
    assert abs(samples / 16000 - 60) < 0.2


def _first_trun(data: bytes) -> int:
    """Where the first `trun`'s flags are: after its size and type."""
    return data.index(b"trun", data.index(b"moof")) + 4


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        # two billion samples in a trun that lists the sizes of 47
        (lambda data, at: data[: at + 4] + struct.pack(">I", 0x7FFFFFFF) + data[at + 8 :],
         "trun longer than its box"),
        # no sizes listed: two billion samples of the tfhd's default size, in one moof
        (lambda data, at: data[:at] + struct.pack(">II", 0x001, 0x7FFFFFFF) + data[at + 8 :],
         "outside its mdat"),
        # a data offset pointing back into the moof
        (lambda data, at: data[: at + 8] + struct.pack(">i", 8) + data[at + 12 :],
         "outside its mdat"),
    ],
    ids=["count-beyond-box", "count-beyond-mdat", "offset-outside-mdat"],
)  # fmt: skip
def test_a_lying_trun_is_refused_without_ffmpeg(
    damage: Callable[[bytes, int], bytes], message: str, ffmpeg_opens: list[int]
) -> None:
    data = STREAMS["safari-like"]()  # its truns list each sample's duration and size
    ffmpeg_opens[0] = 0
    decoder = StreamingDecoder()
    with pytest.raises(UndecodableAudio, match=message) as caught:
        decoder.feed(damage(data, _first_trun(data)))
    assert caught.value.kind == "corrupt"
    assert ffmpeg_opens[0] == 1  # the init segment only


# -- M5: rate-limit tokens and IPv6 clients ----------------------------------------------------


def app_with(tmp_path: Path, *, limits: Limits, per_minute: int = 0, **security: Any) -> Any:
    return create_app(
        Settings(model="fake", data_dir=tmp_path),
        model=FakeModel(),
        security=SecurityConfig(limits=limits, **security),
        limiter=LimiterConfig(limits=RateLimits(per_minute=per_minute)),
    )


@asynccontextmanager
async def session(
    url: str, headers: list[tuple[str, str]] | None = None
) -> AsyncIterator[WebSocketConnection]:
    """An admitted session; the TCP stream trio-websocket may leave open is closed after."""
    async with open_websocket_url(url, extra_headers=encoded_headers(headers)) as ws:
        try:
            yield ws
        finally:
            stream = ws._stream
    await stream.aclose()


async def stop(ws: WebSocketConnection) -> None:
    await send_json(ws, {"type": "stop"})
    assert (await receive_all(ws))[-1]["type"] == "stopped"


async def slots_free(app: Any) -> None:
    """Wait until the server has given back every session slot (after its close handshake)."""
    with trio.fail_after(5):
        while runtime(app).gate.sessions:
            await trio.testing.wait_all_tasks_blocked(0.01)


async def refusal_code(url: str, headers: list[tuple[str, str]] | None = None) -> str:
    refused = await rejected(url, headers)
    assert refused.body is not None
    code: str = json.loads(refused.body)["error"]["code"]
    return code


@pytest.mark.parametrize(
    ("limits", "code"),
    [
        (Limits(max_sessions_per_client=1), "too_many_sessions"),
        (Limits(max_sessions=1), "server_full"),
    ],
    ids=["per-client-cap", "total-cap"],
)
async def test_sessions_refused_by_the_caps_spend_no_rate_limit_token(
    tmp_path: Path, limits: Limits, code: str
) -> None:
    """Two recordings a minute, one session at a time: five attempts refused by the cap while
    the first runs leave the second token for the next session."""
    app = app_with(tmp_path, limits=limits, per_minute=2)
    async with serve_app(app) as address:
        url = f"ws://{address}/v1/stream"
        async with session(url) as first:
            for _ in range(5):
                assert await refusal_code(url) == code
            await stop(first)
        await slots_free(app)
        async with session(url) as second:  # the second token was still there
            await stop(second)
        await slots_free(app)
        assert await refusal_code(url) == "rate_limited"  # and now both are spent


def scope_from(address: str, forwarded: str | None = None) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8000")]
    if forwarded is not None:
        headers.append((b"x-forwarded-for", forwarded.encode()))
    return {
        "type": "http",
        "method": "GET",
        "path": "/v1/sessions",
        "headers": headers,
        "query_string": b"",
        "client": (address, 40000),
    }


def test_an_ipv6_64_is_one_client_and_ipv4_is_per_address() -> None:
    identify = SecurityConfig().identify
    same = {identify(scope_from(f"2001:db8:7:8:{n:x}::{n:x}")) for n in range(1, 50)}
    assert same == {"ip:2001:db8:7:8::/64"}
    assert identify(scope_from("2001:db8:7:9::1")) == "ip:2001:db8:7:9::/64"  # the next /64
    assert identify(scope_from("198.51.100.7")) == "ip:198.51.100.7"
    assert identify(scope_from("198.51.100.8")) == "ip:198.51.100.8"
    assert identify(scope_from("::ffff:198.51.100.7")) == "ip:198.51.100.7"  # mapped IPv4
    assert identify(scope_from("::1")) == "ip:::1"
    proxied = SecurityConfig(trusted_proxies=(ip_network("10.0.0.0/8"),))
    assert proxied.identify(scope_from("10.1.2.3", "2001:db8:7:8::abcd")) == "ip:2001:db8:7:8::/64"
    assert identify(scope_from("unknown")) == "ip:unknown"  # not an address: as it is


async def test_addresses_of_one_ipv6_64_share_the_per_client_session_cap(tmp_path: Path) -> None:
    """Behind a trusted proxy, two addresses of one /64 are one client: the second session is
    refused by the one-per-client cap; an address in another /64 is not."""
    app = app_with(
        tmp_path,
        limits=Limits(max_sessions_per_client=1),
        trusted_proxies=(ip_network("127.0.0.1/32"),),
    )
    async with serve_app(app) as address:
        url = f"ws://{address}/v1/stream"

        def via(client: str) -> list[tuple[str, str]]:
            return [("X-Forwarded-For", client)]

        async with session(url, via("2001:db8:7:8::1")) as first:
            assert await refusal_code(url, via("2001:db8:7:8:ffff::2")) == "too_many_sessions"
            async with session(url, via("2001:db8:7:9::1")) as other:
                await stop(other)
            await stop(first)
