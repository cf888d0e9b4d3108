"""Attacks on the upload routes, sent for real against a served app (issue 11, High-6 and the
small upload items): too many uploads at once, a body that trickles in (slowloris on POST),
work that goes on after the client left, an oversized chunked body, a size limit taken from
the wrong place, and model errors shown to clients. Each is refused early or stops at once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import trio
import trio.testing
from conftest import serve_app
from starlette.applications import Starlette
from support.audio_files import DATA, load, wav_bytes
from support.fakes import FakeModel

from actors.model.port import SAMPLE_RATE
from actors.transcriber.files import FileOptions, find_utterances
from service.app import create_app
from service.config import Settings
from service.policy.limits import Limits
from service.policy.security import ApiKeys, SecurityConfig
from service.runtime import runtime

KEYS = ApiKeys.from_env({"CHORUS_API_KEYS": "alice:key-alice,bob:key-bob,carol:key-carol"})
OPENAI = "/v1/audio/transcriptions"
ROUTES = ("/transcribe", OPENAI, "/v1/audio/translations")


CLIP = wav_bytes(load(DATA / "garden.wav"))  # 3.95 s of speech


def app_with(tmp_path: Path, model: FakeModel | None = None, **limits: float) -> Starlette:
    security = SecurityConfig(api_keys=KEYS, limits=Limits(**limits))  # type: ignore[arg-type]
    return create_app(
        Settings(model="fake", data_dir=tmp_path), model=model or FakeModel(), security=security
    )


def form(path: str, data: bytes = CLIP) -> tuple[str, bytes]:
    """(content type, body) of the multipart form `path` takes, holding `data` as the file."""
    fields = {"model": "whisper-1"} if path.startswith("/v1/") else {}
    request = httpx.Request(
        "POST", "http://x" + path, data=fields, files={"file": ("clip.wav", data, "audio/wav")}
    )
    return request.headers["content-type"], request.read()


class Answer:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        self.status = int(status.split()[1])
        self.headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines)
        }

    def error(self) -> dict[str, str]:
        error: dict[str, str] = json.loads(self.body)["error"]
        return error


@asynccontextmanager
async def raw_post(
    address: str, path: str, key: str, *, length: int | None, content_type: str
) -> AsyncIterator[trio.SocketStream]:
    """A connection that has sent a POST's headers and none of its body (chunked when
    `length` is None); the caller sends what it likes."""
    host, port = address.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    framing = "transfer-encoding: chunked" if length is None else f"content-length: {length}"
    authorization = f"authorization: Bearer {key}\r\n" if key else ""
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {address}\r\n{authorization}"
        f"content-type: {content_type}\r\n{framing}\r\n\r\n"
    )
    async with stream:
        await stream.send_all(head.encode())
        yield stream


async def answer(stream: trio.SocketStream, timeout_s: float = 10) -> Answer:
    """Everything the server sends until it closes the connection, or has sent a whole answer."""
    raw = b""
    with trio.fail_after(timeout_s):
        while chunk := await stream.receive_some():
            raw += chunk
            _, end, body = raw.partition(b"\r\n\r\n")
            length = Answer(raw).headers.get("content-length") if end else None
            if length is not None and len(body) >= int(length):
                break
    return Answer(raw)


async def post(http: httpx.AsyncClient, address: str, path: str, key: str) -> httpx.Response:
    content_type, body = form(path)
    headers = {"authorization": f"Bearer {key}", "content-type": content_type}
    return await http.post(f"http://{address}{path}", content=body, headers=headers)


# -- concurrency caps -------------------------------------------------------------------------


async def test_upload_caps_refuse_before_the_body_is_read(tmp_path: Path) -> None:
    """Uploads in flight are capped per client (429) and in all (503), across every upload
    route, with `Retry-After`, answered with the body still unsent; a slot comes back when
    its upload ends."""
    # alice's body waits while the others are refused: no minimum rate for this test
    app = app_with(tmp_path, max_uploads_per_client=1, max_uploads=2, upload_rate_grace_s=60)
    content_type, body = form("/transcribe")
    async with (
        serve_app(app) as address,
        raw_post(
            address, "/transcribe", "key-alice", length=len(body), content_type=content_type
        ) as alice,
        raw_post(address, OPENAI, "key-bob", length=len(body), content_type=content_type),
    ):
        await trio.testing.wait_all_tasks_blocked(0.1)  # both wait for their bodies
        for path in ROUTES:
            async with raw_post(
                address, path, "key-alice", length=len(body), content_type=content_type
            ) as again:
                refused = await answer(again)
            assert refused.status == 429, (path, refused.body)
            assert refused.error()["code"] == "too_many_uploads"
            assert refused.headers["retry-after"].isdigit()
            async with raw_post(
                address, path, "key-carol", length=len(body), content_type=content_type
            ) as carol:
                full = await answer(carol)
            assert full.status == 503, (path, full.body)
            assert full.error()["code"] == "server_busy"
            assert full.headers["retry-after"].isdigit()

        await alice.send_all(body)
        assert (await answer(alice)).status == 200
        async with httpx.AsyncClient(timeout=30) as http:
            for path in (OPENAI, "/transcribe"):  # one at a time: alice's cap is 1
                assert (await post(http, address, path, "key-alice")).status_code == 200


# -- slowloris on POST ------------------------------------------------------------------------


async def test_a_body_that_trickles_is_cut_off_with_408(tmp_path: Path) -> None:
    """A byte every 50 ms never finishes the body; the app gives up at its deadline (whatever
    the ASGI server does), closes the connection and gives the slot back."""
    app = app_with(tmp_path, upload_read_timeout_s=1.0, max_uploads_per_client=1)
    content_type, body = form(OPENAI)
    async with serve_app(app) as address:
        async with (
            raw_post(
                address, OPENAI, "key-alice", length=len(body), content_type=content_type
            ) as slow,
            trio.open_nursery() as nursery,
        ):

            async def trickle() -> None:
                for byte in body:
                    await slow.send_all(bytes([byte]))
                    await trio.sleep(0.05)

            nursery.start_soon(trickle)
            refused = await answer(slow, timeout_s=20)
            nursery.cancel_scope.cancel()
        assert refused.status == 408, refused.body
        assert refused.error()["code"] == "body_timeout"
        async with httpx.AsyncClient(timeout=30) as http:
            assert (await post(http, address, OPENAI, "key-alice")).status_code == 200


async def test_slow_bodies_from_many_identities_give_their_slots_back(tmp_path: Path) -> None:
    """Four clients each send their body at 1 KiB/s, under the read deadline (60 s) but below
    the minimum rate: each is cut off with 408 `body_too_slow` a few seconds in, and the slots
    are free again (before the fix all 4 x 2 slots were held for a minute)."""
    app = app_with(tmp_path, max_uploads=4)
    content_type, body = form(OPENAI)
    refused: list[Answer] = []

    async def slow_upload(address: str, key: str) -> None:
        async with (
            raw_post(address, OPENAI, key, length=len(body), content_type=content_type) as slow,
            trio.open_nursery() as nursery,
        ):

            async def trickle() -> None:
                for at in range(0, len(body), 256):
                    await slow.send_all(body[at : at + 256])
                    await trio.sleep(0.25)

            nursery.start_soon(trickle)
            refused.append(await answer(slow, timeout_s=20))
            nursery.cancel_scope.cancel()

    async with serve_app(app) as address:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for key in ("key-alice", "key-bob", "key-carol", "key-alice"):
                    nursery.start_soon(slow_upload, address, key)
        assert [answer.status for answer in refused] == [408] * 4
        assert {answer.error()["code"] for answer in refused} == {"body_too_slow"}
        async with httpx.AsyncClient(timeout=30) as http:
            assert (await post(http, address, OPENAI, "key-alice")).status_code == 200


async def test_an_upload_prompt_is_capped(tmp_path: Path) -> None:
    """A `prompt` of half a megabyte reaches the model as its last 1,000 characters (as a live
    session's is capped; Whisper keeps only the tail anyway, and OpenAI takes such a prompt)."""
    model = FakeModel()
    prompt = "x" * (512 << 10) + "y" * 1000
    async with (
        serve_app(app_with(tmp_path, model)) as address,
        httpx.AsyncClient(timeout=30) as http,
    ):
        answer = await http.post(
            f"http://{address}{OPENAI}",
            headers={"authorization": "Bearer key-alice"},
            data={"model": "whisper-1", "prompt": prompt},
            files={"file": ("clip.wav", CLIP, "audio/wav")},
        )
        assert answer.status_code == 200, answer.text
    assert {request.options.prompt for request in model.seen} == {"y" * 1000}


# -- work stops when the client goes ----------------------------------------------------------


async def test_transcription_stops_when_the_client_disconnects(tmp_path: Path) -> None:
    """The client leaves while the model holds the file's first batch: the file's other
    utterances never reach the model."""
    speech = load(DATA / "garden.wav")
    silence = np.zeros(3 * SAMPLE_RATE, dtype=speech.dtype)
    samples = np.concatenate([part for _ in range(8) for part in (speech, silence)])
    utterances = len(find_utterances(samples, FileOptions()))
    assert utterances >= 2 * FileOptions().in_flight
    model = FakeModel()
    model.gate.clear()
    app = app_with(tmp_path, model)
    async with serve_app(app) as address, httpx.AsyncClient(timeout=60) as http:
        content_type, body = form(OPENAI, wav_bytes(samples))
        headers = {"authorization": "Bearer key-alice", "content-type": content_type}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: http.post(f"http://{address}{OPENAI}", content=body, headers=headers)
            )
            assert await trio.to_thread.run_sync(model.entered.wait, 20)
            nursery.cancel_scope.cancel()  # the client goes
        await trio.testing.wait_all_tasks_blocked(0.2)
        model.gate.set()
        # the model answers at once: without the fix, every utterance has reached it by the
        # time nothing is left to run
        await trio.testing.wait_all_tasks_blocked(0.5)
        assert 0 < len(model.seen) <= FileOptions().in_flight < utterances
        assert runtime(app).transcriber.statistics().dropped > 0


# -- small items ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/transcribe", OPENAI])
async def test_an_oversized_chunked_upload_answers_413(tmp_path: Path, path: str) -> None:
    app = app_with(tmp_path, max_upload_bytes=64 * 1024)
    content_type, body = form(path, bytes(100_000))
    async with (
        serve_app(app) as address,
        raw_post(address, path, "key-alice", length=None, content_type=content_type) as upload,
    ):
        piece = body[: 64 * 1024 + 1000]  # past the limit; nothing unsent left over
        await upload.send_all(b"%x\r\n%s\r\n" % (len(piece), piece))
        refused = await answer(upload)
    assert refused.status == 413, refused.body
    assert refused.error()["code"] == "file_too_large"


async def test_the_size_limit_is_the_apps_read_once_with_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`CHORUS_MAX_UPLOAD_BYTES` from `.env` holds for chunked uploads too, and a variable set
    after the app was built changes nothing."""
    monkeypatch.delenv("CHORUS_MAX_UPLOAD_BYTES", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("CHORUS_MAX_UPLOAD_BYTES=4096\n")
    small = create_app(Settings(model="fake", data_dir=tmp_path), model=FakeModel())
    content_type, body = form("/transcribe")
    async with (
        serve_app(small) as address,
        raw_post(address, "/transcribe", "", length=None, content_type=content_type) as upload,
    ):
        await upload.send_all(b"%x\r\n%s\r\n" % (5000, body[:5000]))
        refused = await answer(upload)
    assert refused.status == 413 and refused.error()["code"] == "file_too_large"

    large = app_with(tmp_path, max_upload_bytes=1 << 20)
    monkeypatch.setenv("CHORUS_MAX_UPLOAD_BYTES", "4096")
    async with serve_app(large) as address, httpx.AsyncClient(timeout=30) as http:
        assert len(form(OPENAI)[1]) > 4096
        accepted = await post(http, address, OPENAI, "key-alice")
    assert accepted.status_code == 200, accepted.text


async def test_model_errors_stay_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = app_with(tmp_path, FakeModel(fail=lambda request: True))
    async with serve_app(app) as address, httpx.AsyncClient(timeout=30) as http:
        for path in ("/transcribe", OPENAI):
            failed = await post(http, address, path, "key-alice")
            assert failed.status_code == 500
            assert failed.json()["error"]["code"] == "model_error"
            assert "fake model broke" not in failed.text
    assert "fake model broke" in caplog.text


def test_the_upload_limits_read_their_variables() -> None:
    assert Limits.from_env({}).max_uploads_per_client == 2
    assert Limits.from_env({}).max_uploads == 8
    assert Limits.from_env({}).upload_read_timeout_s == 60.0
    environ = {
        "CHORUS_MAX_UPLOADS_PER_CLIENT": "3",
        "CHORUS_MAX_UPLOADS": "5",
        "CHORUS_UPLOAD_READ_TIMEOUT_S": "7.5",
    }
    limits = Limits.from_env(environ)
    assert (limits.max_uploads_per_client, limits.max_uploads) == (3, 5)
    assert limits.upload_read_timeout_s == 7.5
    for name in environ:
        with pytest.raises(ValueError, match=name):
            Limits.from_env({name: "0"})
