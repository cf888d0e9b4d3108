"""Key terms end to end: Deepgram's `keyterm` query parameter and its v1
`Configure` mid-stream, with the official `deepgram-sdk` against a real server with tiny.en.

LJ001-0031 names three rare names ("In fourteen sixty-five Sweynheim and Pannartz began
printing in the monastery of Subiaco near Rome"); tiny.en spells none of them right without
help, and all of them with the key terms (measured: docs/accuracy.md)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from support.dialect_helpers import chunks, deepgram_client, pcm16_file, serving, silence, speech
from support.sdk_models import checked

from actors.model.port import SpeechModel

pytestmark = pytest.mark.filterwarnings("ignore:websockets\\.:DeprecationWarning")
NAMES = ("Sweynheim", "Pannartz", "Subiaco")
BEFORE = "ljspeech_coqui/LJ001-0002.wav"  # an utterance before the vocabulary changes
RARE = "ljspeech_coqui/LJ001-0031.wav"


def send(socket: Any, audio: bytes) -> None:
    for piece in chunks(audio, 6400):  # 200 ms of 16 kHz PCM16
        socket.send_media(piece)
        time.sleep(0.05)  # four times real time


def listen(address: str, configures: list[Any], **options: Any) -> list[Any]:
    """One utterance, then each of `configures`, then the clip with the rare names."""
    with deepgram_client(address).listen.v1.connect(
        model="nova-3", encoding="linear16", sample_rate="16000", punctuate="true", **options
    ) as socket:
        send(socket, pcm16_file(speech(BEFORE)) + silence(1.0))
        for configure in configures:
            socket.send_configure(configure)
        send(socket, pcm16_file(speech(RARE)) + silence(0.5))
        socket.send_close_stream()
        return [checked(message) for message in socket]


def recalled(messages: list[Any]) -> set[str]:
    text = " ".join(
        m.channel.alternatives[0].transcript for m in messages if m.type == "Results" and m.is_final
    )
    return {name for name in NAMES if re.search(rf"\b{name}\b", text, re.IGNORECASE)}


async def test_a_configure_mid_stream_raises_the_recall_of_rare_names(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    from deepgram.listen.v1.types.listen_v1configure import ListenV1Configure

    too_many = [f"term{number}" for number in range(101)]
    configures = [
        ListenV1Configure(keyterms=list(NAMES)),
        ListenV1Configure(keyterms=too_many),
    ]
    async with serving(tiny_model, tmp_path) as address:
        plain = await trio.to_thread.run_sync(lambda: listen(address, []))
        configured = await trio.to_thread.run_sync(lambda: listen(address, configures))
    assert not [m for m in plain if m.type.startswith("Configure")]
    answers = [m for m in configured if m.type.startswith("Configure")]
    assert [m.type for m in answers] == ["ConfigureSuccess", "ConfigureFailure"]
    assert answers[0].keyterms == list(NAMES)
    assert answers[1].code == "CONFIGURE_KEYTERM_LIMIT_EXCEEDED"
    assert "101 key terms" in answers[1].description
    assert {answer.request_id for answer in answers} == {configured[-1].request_id}
    assert len(recalled(configured)) > len(recalled(plain)), (plain, configured)
    # at least 2 of the 3 names: int8 kernels (so the exact text) differ between CPUs; on the
    # AVX2 EPYC this was written on, all three, and none without the key terms
    assert len(recalled(configured)) >= 2, configured


async def test_keyterm_query_parameters_outlast_a_refused_configure(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    from deepgram.listen.v1.types.listen_v1configure import ListenV1Configure

    refused = ListenV1Configure(keyterms=["x" * 101])
    async with serving(tiny_model, tmp_path) as address:
        messages = await trio.to_thread.run_sync(
            lambda: listen(address, [refused], keyterm=list(NAMES))
        )
    answers = [m for m in messages if m.type.startswith("Configure")]
    assert [m.type for m in answers] == ["ConfigureFailure"]
    assert "1 to 100 characters" in answers[0].description
    assert len(recalled(messages)) >= 2  # the query's key terms hold (2 of 3: any CPU)
