"""`hypercorn -k trio service.asgi:app` as a real process: settings from `.env` and the
environment, the model loaded in the lifespan (not at import), `/health` and one transcription
through seed 004's `POST /transcribe`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx
import trio
from support.dialect_helpers import DATA, overlap
from support.servers import free_port, stop

GARDEN = "my grandmother planted tomatoes and roses in her garden"


def _environment(data_dir: Path) -> dict[str, str]:
    """This process's environment without its CHORUS_ settings, so `.env` decides."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("CHORUS_")}
    return {**clean, "CHORUS_DATA_DIR": str(data_dir)}


async def test_hypercorn_serves_the_asgi_entry_point(tmp_path: Path) -> None:
    # `.env` in the working directory, as `chorus serve` reads it
    (tmp_path / ".env").write_text(
        "CHORUS_MODEL=tiny.en\nCHORUS_CPU_THREADS=2\nCHORUS_LOG_LEVEL=warning\n"
    )
    port = free_port()
    server = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "hypercorn",
            "-k",
            "trio",
            "service.asgi:app",
            "--bind",
            f"127.0.0.1:{port}",
        ],
        cwd=tmp_path,
        env=_environment(tmp_path / "data"),
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            with trio.fail_after(120):
                while True:
                    try:
                        health = await http.get("/health")
                        if health.status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert server.returncode is None, "hypercorn exited"
                    await trio.sleep(0.2)
            answer = await http.post(
                "/transcribe",
                files={"file": ("audio.wav", (DATA / "garden.wav").read_bytes())},
                data={"language": "english"},
            )
    finally:
        await stop(server)
    assert health.json()["status"] == "ok" and health.json()["model"] == "tiny.en"
    assert answer.status_code == 200, answer.text
    assert list(answer.json()) == ["transcript"]
    assert overlap(answer.json()["transcript"], GARDEN) >= 0.7
    assert server.returncode == 0
    assert (tmp_path / "data").is_dir()  # CHORUS_DATA_DIR from the environment


async def test_importing_the_entry_point_loads_no_model(tmp_path: Path) -> None:
    """The import reads the settings and builds the app; the model waits for the lifespan.
    `hypercorn_config` carries `chorus serve`'s hypercorn settings."""
    (tmp_path / ".env").write_text("CHORUS_MODEL=tiny.en\nCHORUS_MAX_MESSAGE_BYTES=1048576\n")
    script = (
        "import json, sys\n"
        "from hypercorn.config import Config\n"
        "import service.asgi as entry\n"
        "from service.runtime import setup\n"
        "config = Config.from_object('service.asgi.hypercorn_config')\n"
        "print(json.dumps({'model': setup(entry.app).settings.model,\n"
        "    'loaded': [m for m in ('faster_whisper', 'ctranslate2') if m in sys.modules],\n"
        "    'bind': config.bind, 'max_message': config.websocket_max_message_size,\n"
        "    'graceful': config.graceful_timeout}))\n"
    )
    result = await trio.run_process(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=_environment(tmp_path / "data"),
        capture_stdout=True,
        capture_stderr=True,
    )
    seen = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert seen["model"] == "tiny.en" and seen["loaded"] == []
    assert seen["bind"] == ["127.0.0.1:8000"] and seen["graceful"] == 10.0
    assert seen["max_message"] >= 1048576
