"""Twilio Media Streams (`WS /v1/twilio`) as a codec over a multichannel session.

Sans-IO. Twilio opens the WebSocket that a TwiML `<Start><Stream url="wss://…/v1/twilio"
track="both_tracks">` (or `<Connect><Stream>`) names and sends JSON text messages, tagged by
`event`: `connected` {`protocol`, `version`}; `start` {`sequenceNumber`, `streamSid`, `start`:
{`accountSid`, `streamSid`, `callSid`, `tracks`, `customParameters`, `mediaFormat`
{`encoding` "audio/x-mulaw", `sampleRate` 8000, `channels` 1}}}; `media` {`sequenceNumber`,
`streamSid`, `media` {`track` "inbound" | "outbound", `chunk`, `timestamp` (ms since the
stream began, as a string), `payload` (base64 μ-law)}}; `mark` and `dtmf` (taken and
ignored); `stop` {`stop` {`accountSid`, `callSid`}}. Numbers arrive as strings.

Each track is a channel (`TRACKS`: inbound, the caller, is channel 0; outbound, the agent, is 1);
`TwilioCodec` decodes a `media` message to its channel's `ChannelAudio`, placed by its
`timestamp`, on one clock for every started track: each `media` brings its own track and every
other started track up to its `timestamp` with μ-law silence (at most `MAX_GAP_S` per track at
once). Twilio sends no outbound media while nothing plays: the agent's channel still hears the
silence, so it neither idles out nor leaves its last utterance open. `stop` stops the session.
Twilio reads nothing a transcription server sends on a unidirectional stream, so the codec
encodes nothing.

`signature` is Twilio's request signature for a WebSocket stream: HMAC-SHA1, keyed with the
account's auth token, of the full URL Twilio requested (a GET: no parameters appended),
base64; `signature_matches` compares in constant time, with the URL with and without its
default port (as Twilio's own validators do); a URL with a malformed Host matches nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from urllib.parse import urlsplit, urlunsplit

import msgspec

from protocol.codec import ProtocolError
from protocol.dialects.common import ClientMessages
from protocol.multichannel import ChannelAudio
from protocol.native import Stop

TRACKS = ("inbound", "outbound")  # channel 0: the caller; channel 1: the agent
BYTES_PER_MS = 8  # μ-law at 8 kHz
MULAW_SILENCE = b"\xff"
MAX_GAP_S = 10.0
MAX_TIMESTAMP_DIGITS = 12  # ms: 31 years of call


class MediaFormat(msgspec.Struct):
    encoding: str = "audio/x-mulaw"
    sampleRate: int = 8000  # Twilio's field names
    channels: int = 1


class StartDetails(msgspec.Struct):
    streamSid: str
    callSid: str
    accountSid: str = ""
    tracks: list[str] = msgspec.field(default_factory=lambda: ["inbound"])
    customParameters: dict[str, str] = msgspec.field(default_factory=dict)
    mediaFormat: MediaFormat = msgspec.field(default_factory=MediaFormat)


class MediaDetails(msgspec.Struct):
    track: str
    timestamp: str
    payload: str
    chunk: str = ""


class Event(msgspec.Struct, tag_field="event"):
    pass


class Connected(Event, tag="connected"):
    protocol: str = ""
    version: str = ""


class Start(Event, tag="start"):
    start: StartDetails
    sequenceNumber: str = ""
    streamSid: str = ""


class Media(Event, tag="media"):
    media: MediaDetails
    sequenceNumber: str = ""
    streamSid: str = ""


class StopEvent(Event, tag="stop"):
    sequenceNumber: str = ""
    streamSid: str = ""


class Mark(Event, tag="mark"):
    sequenceNumber: str = ""
    streamSid: str = ""


class Dtmf(Event, tag="dtmf"):
    sequenceNumber: str = ""
    streamSid: str = ""


TwilioEvent = Connected | Start | Media | StopEvent | Mark | Dtmf
events: ClientMessages[TwilioEvent] = ClientMessages(msgspec.json.Decoder(TwilioEvent), tag="event")


def parse(message: str | bytes) -> TwilioEvent:
    """One Twilio message; `ProtocolError` for anything else (Twilio sends only text)."""
    if isinstance(message, bytes):
        raise ProtocolError("binary_frame", "Twilio Media Streams send JSON text only")
    return events.parse(message)


def check_start(start: StartDetails) -> str | None:
    """Why this stream cannot be transcribed (None: it can)."""
    media = start.mediaFormat
    if (media.encoding, media.sampleRate, media.channels) != ("audio/x-mulaw", 8000, 1):
        return f"unsupported media format {media.encoding} {media.sampleRate} {media.channels}"
    if (
        not start.tracks
        or not set(start.tracks) <= set(TRACKS)
        or len(set(start.tracks)) != len(start.tracks)
    ):
        return f"tracks must be inbound and/or outbound, not {start.tracks}"
    return None


class TwilioCodec:
    """One stream's `media` messages as each track's channel audio (see the module docstring)."""

    name = "twilio"

    def __init__(self, tracks: list[str]) -> None:
        ordered = [track for track in TRACKS if track in tracks]
        self.channels = {track: channel for channel, track in enumerate(ordered)}
        self._position = dict.fromkeys(ordered, 0)  # bytes of each track so far

    def decode(self, message: str | bytes) -> list[ChannelAudio | Stop]:
        match parse(message):
            case Media(media=media):
                return self._media(media)
            case StopEvent():
                return [Stop()]
            case Start():
                raise ProtocolError("start_again", "the stream has already started")
        return []  # connected, mark, dtmf

    def encode(self, frame: object) -> list[str | bytes]:
        return []

    def _media(self, media: MediaDetails) -> list[ChannelAudio | Stop]:
        channel = self.channels.get(media.track)
        if channel is None:
            raise ProtocolError("unknown_track", f"track {media.track!r} was not started")
        stamp = media.timestamp
        if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > MAX_TIMESTAMP_DIGITS:
            raise ProtocolError(
                "invalid_message",
                f"`timestamp` must be whole milliseconds, at most {MAX_TIMESTAMP_DIGITS} digits",
            )
        try:
            data = base64.b64decode(media.payload, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("invalid_base64", "`payload` is not valid base64") from None
        at = int(media.timestamp) * BYTES_PER_MS
        audio: list[ChannelAudio | Stop] = []
        for track, other in self.channels.items():  # one clock: the others up to `at` too
            if track != media.track and (silence := self._pad(track, at)):
                audio.append(ChannelAudio(other, silence))
        silence = self._pad(media.track, at)
        self._position[media.track] += len(data)
        data = silence + data
        return [*audio, ChannelAudio(channel, data)] if data else audio

    def _pad(self, track: str, at: int) -> bytes:
        """μ-law silence that brings `track` up to `at` bytes (at most `MAX_GAP_S` of it at
        once); the track's position moves on by it."""
        gap = min(at - self._position[track], int(MAX_GAP_S * 1000) * BYTES_PER_MS)
        if gap <= 0:
            return b""
        self._position[track] += gap
        return MULAW_SILENCE * gap


def signature(auth_token: str, url: str) -> str:
    """Twilio's `X-Twilio-Signature` of a GET of `url` (a WebSocket stream's handshake)."""
    digest = hmac.new(auth_token.encode(), url.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signature_matches(auth_token: str, url: str, given: str) -> bool:
    """Whether `given` signs `url`, or `url` with its default port added or removed."""
    found = False
    for candidate in _with_and_without_port(url):
        found |= hmac.compare_digest(signature(auth_token, candidate).encode(), given.encode())
    return found


def _with_and_without_port(url: str) -> list[str]:
    try:  # a malformed Host (`h:99999`, `[::1`): no URL Twilio requests, so none matches
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return []
    default = {"wss": 443, "https": 443, "ws": 80, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    if port is not None and port == default:
        return [url, urlunsplit(parts._replace(netloc=host))]
    if port is None and default is not None:
        return [url, urlunsplit(parts._replace(netloc=f"{host}:{default}"))]
    return [url]
