"""A session's config: checked once, announced in `ready`, settled before the first audio.

`serve_session` (`service/session/admission.py`) checks the route's `Config` against the model
once (`check_config`), before admission: a dialect that refuses before the upgrade (Deepgram:
HTTP 400) does so there, the others answer an `error` after it and close 1008. A `config`
frame before any audio is checked by the reader (`service/session/reader.py`) the same way and
answered with a new `ready`. When the first audio arrives the reader settles the config
(`settle`) into a frozen `SessionConfig` and hands it to `run_session` (`task_status.started`)
ahead of that audio, which starts the segmenter (it cuts with it) and the transcriber client
(it decodes with it). No stage reads the config from shared state, and nothing changes it once
audio has started.
"""

from __future__ import annotations

import attrs

from actors.model.vocabulary import vocabulary_problem
from actors.speech.segmenter import SegmenterConfig
from protocol.native import Config, Encoding, Error, Ready, Task
from service.session.ports import StreamOptions


@attrs.frozen
class SessionConfig:
    """What the stages need of a session's config, fixed once its audio has started."""

    encoding: Encoding
    sample_rate: int
    channels: int
    segmenter: SegmenterConfig
    language: str | None  # what the model is told; None: it detects the language
    task: Task
    prompt: str | None
    words: bool
    keyterms: tuple[str, ...] = ()


def settle(config: Config, options: StreamOptions) -> SessionConfig:
    """The frozen config of a session from the client's last accepted `Config`."""
    language = None if config.language == "auto" else config.language.split("-")[0]
    if not options.multilingual:
        language = "en"
    return SessionConfig(
        encoding=config.encoding,
        sample_rate=config.sample_rate,
        channels=config.channels,
        segmenter=SegmenterConfig(
            endpointing_ms=config.endpointing_ms,
            max_utterance_s=config.max_utterance_s,
            partial_interval_s=options.partial_interval_s,
            interim=config.interim,
        ),
        language=language,
        task=config.task,
        prompt=config.prompt,
        words=config.words,
        keyterms=tuple(config.keyterms or ()),
    )


def check_config(config: Config, options: StreamOptions) -> Error | None:
    """What the model cannot do with this config, as an error frame (None when fine)."""
    if (problem := vocabulary_problem(config.keyterms)) is not None:
        return Error(code="invalid_vocabulary", message=problem)
    if not options.multilingual:
        if config.task == "translate":
            return Error(
                code="unsupported_task",
                message=f"model {options.model} is English-only: it cannot translate",
            )
        if config.language not in ("auto", "en") and not config.language.startswith("en-"):
            return Error(
                code="unsupported_language",
                message=f"model {options.model} is English-only; "
                f"language {config.language!r} is not supported",
            )
    else:
        base = config.language.split("-")[0]
        if config.language != "auto" and base not in options.languages:
            return Error(
                code="unsupported_language",
                message=f"language {config.language!r} is not one of the model's",
            )
    return None


def ready_frame(session_id: str, config: Config, options: StreamOptions) -> Ready:
    return Ready(
        session_id=session_id,
        model=options.model,
        sample_rate=config.sample_rate,
        language=config.language,
    )
