"""The one client-message decoder the dialects share (`protocol.dialects.common`)."""

from __future__ import annotations

import msgspec
import pytest

from protocol.codec import Inbound, ProtocolError
from protocol.dialects.common import ClientMessages, b64_audio, decode_commands
from protocol.native import Ping, Stop


class Message(msgspec.Struct, tag_field="kind", kw_only=True):
    pass


class Say(Message, tag="say"):
    audio: str

    def inbound(self) -> bytes:
        return b64_audio(self.audio, "audio")


class Bye(Message, tag="bye"):
    def inbound(self) -> Stop:
        return Stop()


class Hello(Message, tag="hello"):
    def inbound(self) -> Ping:
        return Ping()


Incoming = Say | Bye | Hello
MESSAGES: ClientMessages[Incoming] = ClientMessages(msgspec.json.Decoder(Incoming), tag="kind")
TERSE: ClientMessages[Bye | Hello] = ClientMessages(
    msgspec.json.Decoder(Bye | Hello), tag="kind", dialect="Terse"
)


def test_each_command_says_what_it_asks_of_the_session() -> None:
    expected: list[Inbound] = [b"\x00\x01\x02"]
    assert decode_commands(MESSAGES, '{"kind": "say", "audio": "AAEC"}') == expected
    assert decode_commands(MESSAGES, '{"kind": "bye"}') == [Stop()]
    assert decode_commands(MESSAGES, '{"kind": "hello"}') == [Ping()]
    assert decode_commands(MESSAGES, b"\x05\x06") == [b"\x05\x06"]  # binary frames are audio


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("not json", "invalid_json"),
        ('{"kind": "dance"}', "unknown_type"),
        ('{"kind": 5}', "unknown_type"),
        ('{"no_kind": 1}', "unknown_type"),
        ('{"kind": "say"}', "invalid_message"),
        ("[1, 2]", "invalid_message"),
        ('{"kind": "say", "audio": "!!"}', "invalid_base64"),
        ('{"kind": "say", "audio": ""}', "empty_frame"),
        (b"", "empty_frame"),
    ],
)
def test_what_a_client_got_wrong_has_a_stable_code(message: str | bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_commands(MESSAGES, message)
    assert caught.value.code == code and not caught.value.fatal


def test_a_dialect_of_bare_tags_calls_every_misfit_unknown() -> None:
    for message in ('{"kind": "dance"}', "[1, 2]", '{"no_kind": 1}'):
        with pytest.raises(ProtocolError) as caught:
            TERSE.parse(message)
        assert caught.value.code == "unknown_type"
        assert caught.value.message.startswith("not a Terse message: ")
    with pytest.raises(ProtocolError) as caught:
        TERSE.parse("nope")
    assert (caught.value.code, caught.value.message) == ("invalid_json", "text message is not JSON")
