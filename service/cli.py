"""The `chorus` command: `chorus serve` runs the app under hypercorn's trio worker.

`serve` owns the process: it builds the app and hands it to `hypercorn.trio.serve`, which owns
the listening sockets and every connection's task; SIGINT/SIGTERM stop it gracefully: the
server drains (`service.app.drain_sessions`: new sessions refused, the HAProxy agent answering
`drain`, live sessions' finals, 1012), then hypercorn stops. Before
anything loads it refuses (exit 2) to listen beyond loopback without API keys, unless told
`--insecure-open`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from service.config import Settings
from service.policy.limits import Limits
from service.session.lead_in import LEAD_IN_MODES
from service.tools import add_commands, run_command

PING_INTERVAL_S = 2.0  # WebSocket pings: how soon a paced session sees that its client has gone


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chorus", description="Live speech-to-text server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server")
    _add_model_options(serve)
    _add_listening_options(serve)
    _add_batching_options(serve)
    _add_drafting_options(serve)
    serve.add_argument(
        "--data-dir",
        dest="data_dir",
        type=Path,
        help="where sessions (SQLite) and recordings (WAV) are kept",
    )
    serve.add_argument("--log-level", dest="log_level")
    add_commands(commands)
    return parser


def _add_model_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--model", help="bundled name (tiny.en, base, small), path or hub name")
    serve.add_argument(
        "--draft-model",
        dest="draft_model",
        help="a smaller model for English partials (auto: tiny.en under a bigger model on a "
        "CPU; none: off); finals stay on --model",
    )
    serve.add_argument("--device", choices=["auto", "cpu", "cuda"])
    serve.add_argument("--compute-type", dest="compute_type")


def _add_listening_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--insecure-open",
        dest="insecure_open",
        action="store_true",
        default=None,
        help="serve a non-loopback address without API keys (anyone who reaches it may use it)",
    )
    serve.add_argument(
        "--agent-port",
        dest="agent_port",
        type=int,
        help="answer HAProxy's agent-check on this TCP port with this replica's headroom "
        "(a weight, or drain when full or shutting down; 0: off)",
    )
    serve.add_argument(
        "--agent-host", dest="agent_host", help="the agent's address (default: --host)"
    )


def _add_batching_options(serve: argparse.ArgumentParser) -> None:
    """How the model runs: threads, workers, batches, pacing and encoder windows."""
    serve.add_argument("--cpu-threads", dest="cpu_threads", type=int)
    serve.add_argument("--max-batch-size", dest="max_batch_size", type=int)
    serve.add_argument("--partial-batch-size", dest="partial_batch_size", type=int)
    serve.add_argument(
        "--workers", type=int, help="model workers running batches at once, sharing the threads"
    )
    serve.add_argument(
        "--pace",
        type=float,
        help="read live audio no faster than this x real time once 10 s ahead (0: no limit)",
    )
    serve.add_argument(
        "--partial-window",
        dest="partial_window",
        choices=["tight", "final"],
        help="partials' encoder window: tight to the audio (default) or the finals' rule",
    )
    serve.add_argument(
        "--final-window",
        dest="final_window",
        choices=["auto", "double", "pad"],
        help="finals' encoder window: twice the audio, or the audio + 3 s (auto: twice for "
        "tiny models, + 3 s for bigger ones)",
    )


def _add_drafting_options(serve: argparse.ArgumentParser) -> None:
    """How partials are drafted and finals decoded."""
    serve.add_argument(
        "--partial-interval",
        dest="partial_interval_s",
        type=float,
        help="seconds of speech between a session's draft requests (default 0.8)",
    )
    serve.add_argument(
        "--caption-target",
        dest="caption_target_s",
        type=float,
        help="seconds a session's text may fall behind its speech before its next draft is "
        "overdue (drafts run most overdue first; admission prices them) (default 1.0)",
    )
    serve.add_argument(
        "--final-reuse",
        dest="final_reuse_s",
        type=float,
        help="finals keep the drafts' committed words that end this many seconds before the "
        "utterance does and decode only the rest (0: decode every final afresh)",
    )
    serve.add_argument(
        "--final-lead-in",
        dest="final_lead_in",
        choices=LEAD_IN_MODES,
        help="which finals are decoded after the previous final's audio and text: on "
        "phone-line audio only (narrowband, the default), always, or never",
    )
    serve.add_argument(
        "--no-commit-partials",
        dest="commit_partials",
        action="store_false",
        default=None,
        help="partials re-decode the whole open utterance (no committed prefix)",
    )
    serve.add_argument(
        "--naive",
        action="store_true",
        default=None,
        help="baseline: each utterance alone on a 30 s window, no batching",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("transcribe", "stream"):
        return run_command(args)
    if args.command == "serve":
        overrides = {key: value for key, value in vars(args).items() if key != "command"}
        try:
            settings = Settings.from_env(**overrides)
        except ValueError as error:  # a setting that cannot be right: say which, start nothing
            print(f"chorus: {error}", file=sys.stderr)
            return 2
        return serve(settings)
    return 2


def hypercorn_settings(settings: Settings, limits: Limits) -> dict[str, object]:
    """hypercorn's settings for Chorus, the same under `chorus serve` and `service.asgi`.

    WebSocket messages (`service.serving`, which each entry point `install()`s): each path's
    largest message in bytes after decoding, the route's own limit plus the 64 KiB JSON limit
    (`/ws`'s 25 MiB recordings, the streaming routes' 1 MiB frames), so that a message a
    little over the route's limit is answered in the route's own words (`frame_too_large`, the
    seed's `error`) and a bigger one closed with 1009 at the door; no permessage-deflate; one
    message queued per connection before the app reads it (`service.serving.WS_QUEUE`; HTTP
    streams keep hypercorn's queue of 10); and a ping every `PING_INTERVAL_S`, whose failed
    write tells a paced session that its client has gone. `websocket_max_message_size` is the
    largest of them, the limit a stream that `install()` has not replaced would keep.

    Slow clients: hypercorn's idle timer runs from the connection's start until a request's
    headers are complete, so headers that trickle are cut off after `keep_alive_timeout`, and
    they may not pass `h11_max_incomplete_size`; a body has the app's own deadline
    (`Limits.upload_read_timeout_s`, 408), as a silent WebSocket has its idle timeout. No
    `read_timeout`: it also ends the wait of a client whose upload is being transcribed (it
    sends nothing meanwhile), and a client going away now cancels its transcription.
    """
    from service.serving import CONFIG_NAME, WebSocketBounds

    bounds = WebSocketBounds(
        stream_bytes=limits.max_frame_bytes + limits.max_message_bytes,
        recordings_bytes=limits.max_audio_message_bytes + limits.max_message_bytes,
        wide_text_bytes=limits.max_message_bytes,
    )
    return {
        "bind": [f"{settings.host}:{settings.port}"],
        "graceful_timeout": 10.0,
        "accesslog": None,
        "websocket_max_message_size": limits.largest_message_bytes,
        CONFIG_NAME: bounds,
        "websocket_ping_interval": PING_INTERVAL_S,
        "keep_alive_timeout": 5.0,
        "h11_max_incomplete_size": 16 * 1024,
        "read_timeout": None,
    }


def serve(settings: Settings) -> int:
    from hypercorn.config import Config as HypercornConfig
    from hypercorn.trio import serve as hypercorn_serve

    from actors.model.weights import ModelNotFound
    from service.app import create_app, drain_sessions, load_whisper
    from service.runtime import setup
    from service.serving import install as install_bounded_websockets

    if (refusal := refuse_open(settings)) is not None:
        print(f"chorus: {refusal}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        model = load_whisper(settings)
    except ModelNotFound as error:
        print(f"chorus: {error}", file=sys.stderr)
        return 1
    app = create_app(settings, model=model)
    install_bounded_websockets()
    config = HypercornConfig()
    for name, value in hypercorn_settings(settings, setup(app).security.limits).items():
        setattr(config, name, value)

    async def run() -> None:
        shutdown = trio.Event()

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    logging.getLogger("chorus").info("draining live sessions")
                    await drain_sessions(app, timeout_s=settings.drain_timeout_s)
                    shutdown.set()
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_signals)
            await hypercorn_serve(app, config, shutdown_trigger=shutdown.wait)  # type: ignore[arg-type]
            nursery.cancel_scope.cancel()

    trio.run(run)
    return 0


def refuse_open(settings: Settings) -> str | None:
    """Why `serve` must not start (before the model loads): an address beyond loopback and no
    API keys, which would let anyone who reaches it transcribe, read and delete sessions."""
    from service.config import environment
    from service.policy.hosts import is_loopback
    from service.policy.security import ApiKeys

    try:
        keys = ApiKeys.from_env(environment())
    except OSError as error:
        return f"CHORUS_API_KEYS_FILE: {error}"
    if keys.keys or settings.insecure_open or is_loopback(settings.host):
        return None
    return (
        f"refusing to serve {settings.host} without API keys: set CHORUS_API_KEYS or "
        "CHORUS_API_KEYS_FILE, bind to 127.0.0.1, or pass --insecure-open "
        "(CHORUS_INSECURE_OPEN=1)"
    )


if __name__ == "__main__":
    sys.exit(main())
