"""Wire types of the native protocol, `WS /v1/stream` (DESIGN §4.1).

Sans-IO: msgspec Structs, tagged unions and module-level decoders/encoders only. The session
pipeline in `service/` produces the server frames below (without `seq`); `NativeCodec`
(`protocol/codec.py`) stamps each with the session's increasing `seq` and encodes it. Other
dialects translate the same frames into their own shapes (see `protocol/dialects/`).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Encoding = Literal["pcm_s16le", "pcm_f32le", "mulaw", "alaw", "auto"]
COMPANDED = ("mulaw", "alaw")  # G.711 telephony, 8 bits a sample; 8 kHz unless told
Task = Literal["transcribe", "translate"]

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 48000
MAX_CHANNELS = 8


class Inbound(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    """Base of every client → server JSON frame."""


MAX_PROMPT_CHARS = 1000  # a prompt's length, live or uploaded (the model keeps 223 tokens)
MAX_KEYTERMS = 100  # key terms a session's vocabulary holds (`actors/model/vocabulary.py`)
MAX_KEYTERM_CHARS = 100
Keyterms = Annotated[
    list[Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KEYTERM_CHARS)]],
    msgspec.Meta(max_length=MAX_KEYTERMS),
]
Prompt = Annotated[str, msgspec.Meta(max_length=MAX_PROMPT_CHARS)]


class Config(Inbound, tag="config"):
    """Session options; from query parameters, or one `config` frame before any audio."""

    sample_rate: Annotated[int, msgspec.Meta(ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE)] = 16000
    encoding: Encoding = "pcm_s16le"
    # interleaved channels of raw PCM, averaged to mono (a container says its own)
    channels: Annotated[int, msgspec.Meta(ge=1, le=MAX_CHANNELS)] = 1
    # each of the interleaved channels transcribed as its own stream; frames carry `channel`
    multichannel: bool = False
    language: Annotated[str, msgspec.Meta(pattern=r"^(auto|[a-z]{2,3}(-[A-Za-z]{2,4})?)$")] = "auto"
    task: Task = "transcribe"
    interim: bool = True
    endpointing_ms: Annotated[int, msgspec.Meta(ge=10, le=10_000)] = 500
    max_utterance_s: Annotated[float, msgspec.Meta(ge=1.0, le=30.0)] = 15.0
    words: bool = False
    sentiment: bool = False
    record: bool = False
    prompt: Prompt | None = None
    keyterms: Keyterms | None = None  # names and terms the transcript should spell right


class Configure(Inbound, tag="configure"):
    """Change the session's vocabulary, also mid-stream: from the next draft and utterance on.
    A field left out (or null) keeps its value; `[]` and `""` clear it. Answered with
    `configured`, or an `error` (code `invalid_vocabulary`)."""

    keyterms: Keyterms | None = None
    prompt: Prompt | None = None


class Audio(Inbound, tag="audio"):
    """Audio for clients that cannot send binary frames: base64 of the configured encoding."""

    data: str


class Finalize(Inbound, tag="finalize"):
    """End the open utterance now; the stream stays open. In a multichannel session
    `channel` ends only that channel's utterance (none: every channel's). With an `id`, the
    session answers `finalized` with it once the cut's finals (if any) have been sent: one
    `finalized` for the whole session, after every targeted channel's final."""

    channel: Annotated[int, msgspec.Meta(ge=0, lt=MAX_CHANNELS)] | None = None
    id: str | int | None = None


class KeepAlive(Inbound, tag="keepalive"):
    """Keeps an idle stream open without advancing audio time."""


class Stop(Inbound, tag="stop"):
    """Finish all pending work, answer `stopped`, then close 1000."""


class Ping(Inbound, tag="ping"):
    id: str | int | None = None


ClientFrame = Config | Configure | Audio | Finalize | KeepAlive | Stop | Ping


class Outbound(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=False):
    """Base of every server → client frame; `seq` is stamped by the codec."""

    seq: int = 0


class Word(msgspec.Struct, kw_only=True):
    word: str
    start: float
    end: float
    confidence: float


class Sentiment(msgspec.Struct, kw_only=True):
    type: Literal["positive", "negative", "neutral"]
    confidence: float
    polarity: float
    subjectivity: float


class Ready(Outbound, tag="ready"):
    session_id: str
    model: str
    sample_rate: int
    language: str
    protocol: str = "chorus.v1"
    # resuming (issue 23): this connection's token for `resume=`, rotated on every connect
    # (None: the server does not resume sessions); on a resumed connection, `resumed` and the
    # audio time the session's clock continues at (the end of the last stored final)
    resume_token: str | None = None
    resumed: bool = False
    audio_start: float = 0.0


class SpeechStarted(Outbound, tag="speech_started"):
    at: float
    # a multichannel session's channel (0 first); absent from a single-channel session's frames
    channel: int | msgspec.UnsetType = msgspec.UNSET


class SpeechStopped(Outbound, tag="speech_stopped"):
    """The segmenter has cut `utterance` at `at` (its end of speech); its final comes once
    decoded. Sent only to sessions whose route asks for it (`StreamOptions.speech_stopped`:
    the OpenAI Realtime codec's), so other dialects' frames stay as they were."""

    utterance: int
    at: float


class Partial(Outbound, tag="partial"):
    utterance: int
    revision: int
    text: str
    start: float
    end: float
    # how many leading characters of `text` are committed: later partials and the final
    # start with exactly them
    committed: int = 0
    confidence: float = 0.0  # the draft's (mean word probability, or from its log-probability)
    silence_s: float = 0.0  # the silence (as the segmenter judges it) at the draft's end
    words: list[Word] | None = None  # the draft's timed words, with `words: true`
    # a multichannel session's channel (0 first); absent from a single-channel session's frames
    channel: int | msgspec.UnsetType = msgspec.UNSET


class Final(Outbound, tag="final"):
    utterance: int
    text: str
    start: float
    end: float
    language: str
    confidence: float
    from_finalize: bool = False
    flags: list[str] = msgspec.field(default_factory=list)
    words: list[Word] | None = None
    sentiment: Sentiment | None = None
    # a multichannel session's channel (0 first); absent from a single-channel session's frames
    channel: int | msgspec.UnsetType = msgspec.UNSET


class UtteranceEnd(Outbound, tag="utterance_end"):
    utterance: int
    at: float
    # a multichannel session's channel (0 first); absent from a single-channel session's frames
    channel: int | msgspec.UnsetType = msgspec.UNSET


class Finalized(Outbound, tag="finalized"):
    """A `finalize` with an `id` is done: every final of the audio before it has been sent."""

    id: str | int | None = None


class Status(Outbound, tag="status"):
    lag_s: float
    queue: int
    degraded: bool
    caption_delay_s: float = 0.0  # how far the newest text is behind the speech now


class Configured(Outbound, tag="configured"):
    """The answer to `configure`: the vocabulary now in effect."""

    keyterms: list[str]
    prompt: str | None


class Stopped(Outbound, tag="stopped"):
    session_id: str
    transcript: str
    duration_s: float
    utterances: int


class Error(Outbound, tag="error"):
    code: str
    message: str
    fatal: bool = False


class Pong(Outbound, tag="pong"):
    id: str | int | None = None


ServerFrame = (
    Ready
    | SpeechStarted
    | SpeechStopped
    | Partial
    | Final
    | UtteranceEnd
    | Finalized
    | Status
    | Configured
    | Stopped
    | Error
    | Pong
)

client_decoder: msgspec.json.Decoder[ClientFrame] = msgspec.json.Decoder(ClientFrame)
server_decoder: msgspec.json.Decoder[ServerFrame] = msgspec.json.Decoder(ServerFrame)
encoder = msgspec.json.Encoder()


def config_from_query(params: dict[str, str]) -> Config:
    """Build a `Config` from query parameters; raises `msgspec.ValidationError` when wrong."""
    known: dict[str, object] = {
        name: value for name, value in params.items() if name in Config.__struct_fields__
    }
    if isinstance(terms := known.get("keyterms"), str):  # a query's list: comma-separated
        known["keyterms"] = [term for term in terms.split(",") if term.strip()]
    if known.get("encoding") in COMPANDED:
        known.setdefault("sample_rate", "8000")  # as Deepgram does: G.711 is telephone audio
    return msgspec.convert(known, Config, strict=False)
