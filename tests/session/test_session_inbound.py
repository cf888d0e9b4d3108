"""`ClientProtocol` (`service/session/inbound.py`), the reader's sans-IO half: what each
client message means for the session, worked out without a socket, a nursery or a clock."""

from __future__ import annotations

from support.fakes import FakeTranscriber, quiet_session

from protocol.native import Config, Error, Pong, Ready, encoder
from protocol.native import Finalize as FinalizeFrame
from protocol.native import Ping as PingFrame
from protocol.native import Stop as StopFrame
from service.session.config import SessionConfig
from service.session.inbound import Action, ClientProtocol, Ended
from service.session.ports import SessionLimits, StreamOptions

LIMITS = SessionLimits(idle_timeout_s=5.0, audio_idle_timeout_s=60.0, max_session_s=100.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def reading() -> tuple[ClientProtocol, Clock]:
    clock = Clock()
    options = StreamOptions(model="fake", limits=LIMITS)
    return ClientProtocol(quiet_session(FakeTranscriber(), options), clock), clock


def text(frame: object) -> str:
    return encoder.encode(frame).decode()


def receive(protocol: ClientProtocol, message: str | bytes) -> list[Action]:
    return list(protocol.receive(message))


def test_the_config_settles_at_the_first_audio_ahead_of_it() -> None:
    protocol, _ = reading()
    assert receive(protocol, text(FinalizeFrame())) == []  # nothing to cut before audio
    [ready] = receive(protocol, text(Config(prompt="books")))
    assert isinstance(ready, Ready)
    settled, audio = receive(protocol, b"\x00\x00")
    assert isinstance(settled, SessionConfig) and settled.prompt == "books"
    assert audio == b"\x00\x00" and protocol.settled
    assert receive(protocol, b"\x01\x00") == [b"\x01\x00"]  # settled once
    [finalize] = receive(protocol, text(FinalizeFrame()))
    [refused] = receive(protocol, text(Config(prompt="late")))
    assert isinstance(finalize, FinalizeFrame)
    assert isinstance(refused, Error) and refused.code == "config_after_audio"


def test_answers_and_ends() -> None:
    protocol, _ = reading()
    [pong] = receive(protocol, text(PingFrame(id="7")))
    assert isinstance(pong, Pong) and pong.id == "7"
    assert receive(protocol, text(StopFrame())) == [Ended("stop")]
    [error] = receive(protocol, '{"type": "nonsense"}')
    assert isinstance(error, Error) and not error.fatal
    [big] = receive(protocol, b"\x00" * (LIMITS.max_frame_bytes + 2))
    assert isinstance(big, Error) and big.code == "frame_too_large"


def test_which_limit_ends_a_quiet_session() -> None:
    protocol, clock = reading()
    clock.now = 4.0
    receive(protocol, '{"type": "keepalive"}')  # before audio: holds nothing
    assert protocol.deadline == 5.0
    clock.now = 5.0
    assert protocol.expire().reason == "idle_timeout"
    receive(protocol, b"\x00\x00")
    clock.now = 8.0
    receive(protocol, '{"type": "keepalive"}')  # after audio: holds the idle timeout off
    assert protocol.deadline == 13.0
    clock.now = 13.0
    ended = protocol.expire()
    assert ended.reason == "idle_timeout" and ended.code is None
    assert ended.farewell is not None and ended.farewell.fatal
    for second in range(12, 65, 4):  # keepalives alone: the audio-idle limit, 60 s on
        clock.now = second
        receive(protocol, '{"type": "keepalive"}')
    clock.now = protocol.deadline
    assert (protocol.deadline, protocol.expire().reason) == (65.0, "audio_idle_timeout")
    clock.now = 100.0
    assert protocol.expire().reason == "session_too_long"
