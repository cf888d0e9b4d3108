"""Server settings from the environment (a `.env` file is read when present) and CLI flags.

`Settings.from_env()` is called once by the CLI or by `create_app()`; the record is frozen and
handed down. Limits and security settings that belong to `service/policy/security.py` are
read there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, get_args

import attrs

from actors.store.database import check_database_url
from actors.store.recording import SAMPLE_WIDTH, RecordingMode, RecordingPolicy
from actors.store.recordings import RecordingsConfig, parse_s3_url
from protocol.openai import DEFAULT_MODEL_ALIASES, ModelAliases, parse_model_aliases
from service.session.lead_in import LEAD_IN_MODES, LeadInMode

FinalWindowSetting = Literal["auto", "double", "pad"]
"""Finals' encoder window: `actors.model.windows.FinalWindow`, or "auto" (by model size)."""


def read_dotenv(path: Path = Path(".env")) -> dict[str, str]:
    """`KEY=value` lines of a `.env` file; comments and blank lines ignored; quotes stripped."""
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def environment() -> dict[str, str]:
    """The process environment over a `.env` file in the working directory, read once here
    for every settings record (`Settings`, security, limits, rate limits)."""
    return {**read_dotenv(), **os.environ}


def _s3_url(_: object, __: object, url: str) -> None:
    if url:
        parse_s3_url(url)  # a wrong URL stops the server before anything is recorded


def _database_url(instance: object, attribute: object, value: str | None) -> None:
    if value is not None:
        check_database_url(value)


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@attrs.frozen
class Settings:
    model: str = "base"
    # names the OpenAI routes take for the served model (`protocol.openai.parse_model_aliases`)
    model_aliases: ModelAliases = attrs.field(
        default=DEFAULT_MODEL_ALIASES, converter=parse_model_aliases
    )
    # a smaller model for English partials; "auto": tiny.en under a bigger model on a CPU;
    # "none": partials on the model itself
    draft_model: str = "auto"
    device: str = "auto"
    compute_type: str = "default"
    cpu_threads: int = 0
    host: str = "127.0.0.1"
    port: int = 8000
    insecure_open: bool = False  # serve beyond loopback without API keys (refused otherwise)
    naive: bool = False  # baseline: one utterance per call on a 30 s window, no batching
    max_batch_size: int = 8
    # drafts batched across sessions (short tail drafts cost less each in a batch; measured:
    # docs/benchmarks.md); bounds how long a final waits behind drafts
    partial_batch_size: int = 8
    queue_size: int = 64
    workers: int = 0  # model workers running batches at once (0: chosen by the adapter)
    partial_window: str = "tight"  # partials: "tight" to the audio, or "final" (finals' rule)
    bucket_s: float = 5.0
    # finals' encoder window: "double" the audio, the audio + 3 s ("pad"); "auto": double for
    # tiny models, pad for bigger ones (actors/model/windows.py)
    final_window: FinalWindowSetting = attrs.field(
        default="auto", validator=attrs.validators.in_(get_args(FinalWindowSetting))
    )
    final_beam_size: int = 5
    # seconds of speech between a session's draft requests (shorter costs model time for
    # little caption delay; measured: docs/benchmarks.md)
    partial_interval_s: float = 0.8
    # share of the model workers' time that revisions (drafts after an utterance's first) may
    # use; 1 (the default) caps nothing: admission prices the revisions captions need
    partial_share: float = 1.0
    # how far a session's text may fall behind its speech before its next draft is overdue;
    # drafts run earliest deadline first, and admission prices one per this much speech
    caption_target_s: float = 1.0
    # while only revisions wait, they run no sooner than this long before the earliest one's
    # deadline, leaving the workers free for finals and first drafts (0: as soon as a worker
    # is free; measured: docs/benchmarks.md)
    revision_lead_s: float = 0.3
    # finals keep the drafts' committed words that end this long before the utterance does and
    # decode only the rest (0: every final decoded afresh); `python -m bench.reuse` measures it
    final_reuse_s: float = 0.0
    # finals decoded after the previous final's audio and text: on phone-line audio only
    # (`narrowband`), `always` or `never` (service/session/lead_in.py)
    final_lead_in: LeadInMode = attrs.field(
        default="narrowband", validator=attrs.validators.in_(LEAD_IN_MODES)
    )
    commit_partials: bool = True  # commit words two drafts agree on; drafts write only the rest
    pace: float = 1.5  # live audio is read no faster than this x real time (0: no limit)
    pace_burst_s: float = 10.0  # ... once a client is this far ahead of real time
    # how long a VAD batch waits for the other live sessions' frames (0: takes what waits)
    vad_gather_ms: float = 30.0
    data_dir: Path = Path("data")
    retention_days: float = 0.0  # 0 keeps sessions forever
    # the store in PostgreSQL, shared by replicas (`DATABASE_URL`; this field's
    # `CHORUS_DATABASE_URL` wins); None: SQLite in `data_dir`. Out of the repr: it may hold a
    # password
    database_url: str | None = attrs.field(default=None, repr=False, validator=_database_url)
    # recordings (issue 11 M1): "allow" the client's `record`, "deny" it, or record "always"
    recording: RecordingMode = attrs.field(
        default="allow", validator=attrs.validators.in_(get_args(RecordingMode))
    )
    max_recording_s: float = 4 * 3600.0  # of audio per recording, then it stops (0: 4 GiB)
    min_free_bytes: int = 1 << 30  # recordings stop (and /health degrades) below this free
    # where recordings are written and kept (None: <data_dir>/recordings); replicas may share
    # one directory, or keep them in an object store, this directory then being the spool
    recordings_dir: Path | None = attrs.field(
        default=None, converter=attrs.converters.optional(Path)
    )
    recordings_url: str = attrs.field(default="", validator=_s3_url)  # s3://bucket/prefix
    s3_endpoint_url: str = ""  # a server other than AWS's (else AWS_ENDPOINT_URL, or AWS)
    drain_timeout_s: float = 30.0  # SIGTERM: time live sessions get to finish their finals
    # the HAProxy agent (`service/agent.py`): a TCP port answering each connection with this
    # replica's headroom (0: off), on `agent_host` (empty: `host`)
    agent_port: int = attrs.field(
        default=0, validator=[attrs.validators.ge(0), attrs.validators.le(65535)]
    )
    agent_host: str = ""
    # SIGTERM with an agent: seconds between the agent answering `drain` and the live sessions
    # being closed (1012), so the balancer sees it before their clients reconnect elsewhere
    drain_notice_s: float = attrs.field(default=2.0, validator=attrs.validators.ge(0))
    # how long a native session whose connection was lost stays resumable with its token, and
    # the replicas' lease on their sessions (issue 23); 0: no resume, sessions end as before
    resume_s: float = 30.0
    admission_lag_s: float = 3.0  # refuse new sessions while a live one is this far behind
    # refuse new live sessions while the p95 of recent finals' waits (asked for to sent, the
    # last 30 s, all sessions) is over this: a final is promised within 2 s of the speech's
    # end, and the segmenter's 500 ms of endpointing comes before the wait; 0 turns it off
    admission_final_wait_s: float = 1.5
    # plan live work for this share of the measured model capacity; 0 turns it off
    admission_utilization: float = 0.75
    admission_cold_sessions: int = 8  # live sessions admitted before any cost is measured
    log_level: str = "info"
    # Twilio Media Streams (`WS /v1/twilio`): the account's auth token, which checks each
    # stream's `X-Twilio-Signature` (None: only a key in the stream's customParameters); out
    # of the repr: a secret
    twilio_auth_token: str | None = attrs.field(default=None, repr=False)
    # the tenant whose sessions signed Twilio streams are: the API key named so sees them
    twilio_tenant: str = "twilio"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = environment() if environ is None else {**read_dotenv(), **environ}
        values: dict[str, object] = {}
        fields = {field.name: field for field in attrs.fields(cls)}
        for name, field in fields.items():
            raw = env.get(f"CHORUS_{name.upper()}")
            if raw is None or raw == "":
                continue
            if field.type in ("bool", bool):
                values[name] = _flag(raw)
            elif field.type in ("int", int):
                values[name] = int(raw)
            elif field.type in ("float", float):
                values[name] = float(raw)
            elif field.type in ("Path", Path):
                values[name] = Path(raw)
            else:
                values[name] = raw
        if "database_url" not in values and env.get("DATABASE_URL", "").strip():
            values["database_url"] = env["DATABASE_URL"].strip()
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)  # type: ignore[arg-type]

    @property
    def recordings(self) -> RecordingsConfig:
        """Where the store writes recordings and keeps them (docs/operations.md)."""
        return RecordingsConfig(
            directory=self.recordings_dir or self.data_dir / "recordings",
            url=self.recordings_url,
            endpoint_url=self.s3_endpoint_url,
        )

    @property
    def recording_policy(self) -> RecordingPolicy:
        """What the store enforces on recordings (16 kHz, 16-bit: 32,000 bytes a second)."""
        policy = RecordingPolicy(mode=self.recording, min_free_bytes=self.min_free_bytes)
        if self.max_recording_s > 0:
            policy = attrs.evolve(
                policy, max_bytes=int(self.max_recording_s * 16000) * SAMPLE_WIDTH
            )
        return policy
