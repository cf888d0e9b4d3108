"""Shapes of the benchmark result files (JSON) and of the server's `/health` answer.

msgspec Structs only, no I/O. `bench/figures.py` fills `RunFigures`; `bench/load.py` and
`bench/offline.py` wrap them in `LoadReport` / `OfflineReport`; `bench/report.py` writes them.
Every duration is in seconds, every latency is wall-clock time on the bench's machine.
"""

from __future__ import annotations

import msgspec


class Distribution(msgspec.Struct, kw_only=True):
    """Percentiles of a set of samples; all None when there are none."""

    count: int
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    mean: float | None = None
    max: float | None = None


class Sessions(msgspec.Struct, kw_only=True):
    started: int  # the WebSocket handshake succeeded
    completed: int  # `stopped` arrived
    refused: int  # HTTP 503, or close 1013 before `ready`
    failed: int  # everything else, with reasons in `RunFigures.failures`


class ServerUsage(msgspec.Struct, kw_only=True):
    """The server's process tree, sampled from /proc while the run lasted."""

    pid: int
    cpu_cores: float  # CPU seconds / wall seconds: 1.0 is one core fully busy
    cpu_percent: float  # the same as a share of all cores of the machine
    peak_rss_mb: float
    samples: int


class BatchStats(msgspec.Struct, kw_only=True):
    """What the shared transcriber did during the run (difference of two `/health` answers)."""

    batches: int
    items: int
    mean_batch: float | None
    batch_sizes: dict[str, int]
    busy_s: float
    # model seconds by kind of work (final, first_draft, revision, other); empty where the
    # server does not say
    model_s: dict[str, float] = msgspec.field(default_factory=dict)

    @property
    def drafts_share(self) -> float | None:
        """The drafts' (first drafts' and revisions') share of the live work's model time."""
        drafts = self.model_s.get("first_draft", 0.0) + self.model_s.get("revision", 0.0)
        live = drafts + self.model_s.get("final", 0.0)
        return drafts / live if live > 0 else None


class SessionSpread(msgspec.Struct, kw_only=True):
    """One figure's p95 in each session of a run, and how far the worst strays from the rest."""

    p95_s: list[float | None]  # by client index; None where a session had no samples
    worst_p95_s: float | None = None
    worst_session: int | None = None  # its client index
    median_p95_s: float | None = None  # the median of the sessions' p95s


class Together(msgspec.Struct, kw_only=True):
    """When every session of a run was live at once, from the clients' own send times."""

    planned_s: float  # from the stagger and the conversations' lengths, before the run
    seconds: float  # measured: the last session's first chunk to the first session's last one
    start_s: float | None = None  # seconds after the run's first chunk was sent
    end_s: float | None = None
    scored: bool = False  # latencies counted only where their reference instant lies inside


class RunFigures(msgspec.Struct, kw_only=True):
    label: str
    clients: int
    speed: float
    wall_s: float
    audio_s: float  # audio per session (conversation length)
    speech_s: float  # speech sent, all sessions together
    sessions: Sessions
    failures: list[str]
    finals: int
    final_latency_s: Distribution  # arrival of a final - send of the chunk holding `final.end`
    end_of_speech_latency_s: Distribution  # arrival - send of the end of the speech it covers
    first_partial_s: Distribution  # first partial of a clip - send of the start of its speech
    # first partial or final of a clip of 2 s or more - send of its first second of speech
    first_text_s: Distribution = msgspec.field(default_factory=lambda: Distribution(count=0))
    partials_per_speech_s: float | None
    unmatched_finals: int  # finals that overlap no reference speech (hallucinations, noise)
    wer: float | None  # completed sessions, Whisper-normalized, all words together
    reference_words: int
    max_lag_s: float | None  # largest `lag_s` in `status` frames
    # audio sent minus the end of the latest final by then, at every chunk sent (bench.figures)
    text_lag_s: Distribution = msgspec.field(default_factory=lambda: Distribution(count=0))
    max_send_lag_s: float  # how late the bench itself sent a chunk: large values void the run
    bench_cpu_cores: float  # CPU the load generator itself used (it shares the machine)
    server: ServerUsage | None
    transcriber: BatchStats | None
    held: bool = True
    verdict: str = ""
    # completed sessions with something to say (a peer that still had text in progress when
    # the drain ran out, so that its last words never came)
    notes: list[str] = msgspec.field(default_factory=list)
    # every 0.25 s of a clip's speech from its first second on: the audio time being sent minus
    # the end of the newest text received by then (bench.timeline); all sessions together
    caption_delay_s: Distribution = msgspec.field(default_factory=lambda: Distribution(count=0))
    caption_delay_sessions: SessionSpread | None = None  # each session's p95 of it
    speech_fraction: float | None = None  # the conversations' mean share of speech
    together: Together | None = None  # when all N were live at once (bench.sustain)
    refinement: bool = False  # the step tried between the last held N and the first failed one


class ServerLaunch(msgspec.Struct, kw_only=True):
    """What a server under test was given: enough to start the same one again."""

    how: str  # "started by the bench", or "already running (pid P)"
    command: list[str]  # empty when unknown
    environment: dict[str, str]  # the settings among its environment variables (bench.launch)
    threads: str  # its model threads, in words
    workers: int | None = None  # model workers, from `/health` when it answers


class WarmUp(msgspec.Struct, kw_only=True):
    """Sessions streamed before the first step, not scored, so that a server's admission meter
    has measured something before the first count is judged."""

    clients: int
    audio_s: float  # per session
    sessions: Sessions
    wall_s: float


class CapacitySearch(msgspec.Struct, kw_only=True):
    label: str
    url: str
    naive: bool
    runs: list[RunFigures]
    capacity: int  # largest client count that held; 0 when none did
    stop_reason: str
    peer: bool = False  # another project's server (`--peer`), not a Chorus baseline
    server: str = ""  # what it was, in words (e.g. its version and mode)
    launch: ServerLaunch | None = None  # its command line, environment and threads
    warm_up: WarmUp | None = None  # the unscored sessions before the first step
    refined: int | None = None  # the N tried between the last held and the first failed
    caption_source: str = ""  # where caption delay's audio ends came from; empty: not measured


class Comparison(msgspec.Struct, kw_only=True):
    """Chorus against another server (the naive one, an earlier commit, or a peer such as
    WhisperLive), same invocation."""

    capacity_ratio: float | None
    p95_final_latency_ratio: dict[str, float]  # by client count: naive / chorus
    cpu_ratio: dict[str, float]  # by client count: naive / chorus
    label: str = ""  # the other server's search label


class Reference(msgspec.Struct, kw_only=True):
    """Offline faster-whisper on this machine, measured in the same invocation (DESIGN §8)."""

    method: str
    audio_s_per_wall_s: float  # of the median pass
    audio_s: float
    files: int
    passes: list[float] = []  # audio seconds per wall second of each pass over the files


class Efficiency(msgspec.Struct, kw_only=True):
    """E = sessions held × the conversations' mean speech fraction ÷ offline throughput, for
    one capacity search."""

    label: str
    capacity: int
    speech_fraction: float | None
    efficiency: float | None


class LoadReport(msgspec.Struct, kw_only=True):
    kind: str
    created: str
    machine: dict[str, str]
    options: dict[str, str]
    searches: list[CapacitySearch]
    comparison: Comparison | None = None  # against the baseline
    peer_comparisons: list[Comparison] = msgspec.field(default_factory=list)  # `--peer`
    reference: Reference | None = None
    efficiency: list[Efficiency] = msgspec.field(default_factory=list)


class MethodResult(msgspec.Struct, kw_only=True):
    method: str
    available: bool
    note: str = ""
    files: int = 0
    audio_s: float = 0.0
    wall_s: float | None = None
    audio_s_per_wall_s: float | None = None
    wer: float | None = None


class OfflineReport(msgspec.Struct, kw_only=True):
    kind: str
    created: str
    machine: dict[str, str]
    options: dict[str, str]
    methods: list[MethodResult]


class TranscriberHealth(msgspec.Struct, kw_only=True):
    batches: int = 0
    items: int = 0
    batch_sizes: dict[str, int] = msgspec.field(default_factory=dict)
    queue: int = 0
    busy_s: float = 0.0
    model_s: dict[str, float] = msgspec.field(default_factory=dict)  # busy_s by kind of work
    workers: int = 0  # 0: the server did not say


class Health(msgspec.Struct, kw_only=True):
    """`GET /health`; unknown fields are ignored, missing ones default."""

    status: str = ""
    model: str = ""
    sessions: int = 0
    transcriber: TranscriberHealth | None = None


health_decoder: msgspec.json.Decoder[Health] = msgspec.json.Decoder(Health)
