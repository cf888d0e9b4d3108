"""Admission by measured capacity: the meter's prediction, its measurement from the real
transcriber's counters, and a refusal at the handshake while the sessions held keep going."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import httpx
import numpy as np
import pytest
import trio
from conftest import serve_app
from support.audio_files import DATA, load
from support.fakes import FakeModel, SlowModel
from support.ws_client import connect, receive_all, rejected, send_audio, send_json

from actors.model.port import Request
from actors.transcriber.actor import TranscriberConfig, open_transcriber
from service.app import create_app
from service.config import Settings
from service.policy.capacity import CapacityMeter, Counters
from service.runtime import runtime


def test_nothing_is_refused_before_anything_was_measured() -> None:
    meter = CapacityMeter()
    assert meter.admits(live=100) and meter.headroom(100) is None
    meter.observe(0.0, Counters())
    meter.observe(5.0, Counters(), [(3.0, 5.0)] * 3)  # no finals yet: no cost sample
    assert meter.cost is None and meter.admits(live=3)


def test_headroom_follows_costs_and_speech_per_session() -> None:
    meter = CapacityMeter(workers=1, utilization=0.7, halflife_s=1e-9, trust_audio_s=0)
    meter.observe(0.0, Counters())
    # 1.2 model seconds for 3 finals of 4 s; 0.6 s for 3 first drafts; two sessions, 60% speech
    counters = Counters(final_busy_s=1.2, final_audio_s=12.0, finals=3)
    counters = attrs.evolve(counters, first_partial_busy_s=0.6, first_partials=3)
    meter.observe(10.0, counters, [(6.0, 10.0), (6.0, 10.0)])
    assert (meter.final_cost, meter.first_draft_cost) == pytest.approx((0.1, 0.2))
    assert meter.utterance_s == pytest.approx(4.0)
    # a second of speech: its final (0.1) and a quarter of an utterance's first draft (0.05)
    assert meter.cost == pytest.approx(0.15)
    assert meter.capacity == pytest.approx(0.7 / 0.15)
    assert meter.per_session == pytest.approx(0.6)
    assert meter.headroom(2) == 5  # floor(4.67 / 0.6) = 7 sessions fit, 2 are live
    assert meter.admits(6) and not meter.admits(7)
    stats = meter.statistics(7)
    assert (stats.headroom, stats.offered_speech_s_per_s) == pytest.approx((0, 4.2))
    meter.workers = 2  # a second model worker doubles what admission plans for
    assert meter.headroom(7) == 8


def test_revisions_are_priced_per_second_of_speech_less_each_first_draft() -> None:
    """An utterance asks for a draft every `revision_every_s` of it; its first is its first
    draft, priced on its own, so a second of speech pays for 1 / 0.8 - 1 / 4 revisions of 4 s
    utterances, not 1 / 0.8."""
    meter = CapacityMeter(halflife_s=1e-9, trust_audio_s=0, revision_every_s=0.8)
    meter.observe(0.0, Counters())
    counters = Counters(final_busy_s=1.2, final_audio_s=12.0, finals=3)  # utterances of 4 s
    counters = attrs.evolve(counters, first_partial_busy_s=0.6, first_partials=3)
    meter.observe(10.0, attrs.evolve(counters, revision_busy_s=1.0, revisions=10))
    assert meter.revision_cost == pytest.approx(0.1)
    assert meter.revisions_per_speech_s == pytest.approx(1.25 - 0.25)
    assert meter.cost == pytest.approx(0.1 + 0.2 / 4 + 0.1 * 1.0)
    assert meter.statistics(1).revision_cost == pytest.approx(0.1)
    meter.utterance_s = 0.5  # utterances shorter than the cadence ask for no revision
    assert meter.revisions_per_speech_s == 0.0
    meter.first_draft_cost = None  # first drafts not priced yet: every ask priced a revision
    assert meter.revisions_per_speech_s == pytest.approx(1.25)


def test_revisions_are_not_priced_without_a_cadence() -> None:
    """The naive server drafts no revisions (`revision_every_s` None): a second of speech costs
    its final alone, here with no first drafts measured either."""
    meter = CapacityMeter(utilization=0.8, halflife_s=1e-9, trust_audio_s=0)
    meter.observe(0.0, Counters())
    meter.observe(10.0, Counters(final_busy_s=1.0, final_audio_s=10.0, finals=2))
    assert meter.cost == pytest.approx(0.1) and meter.first_draft_cost is None
    assert meter.capacity == pytest.approx(0.8 / 0.1)


def test_new_sessions_tell_nothing_and_the_default_share_is_prudent() -> None:
    meter = CapacityMeter(workers=1, utilization=1.0, halflife_s=1e-9, trust_audio_s=0)
    meter.observe(0.0, Counters())
    meter.observe(10.0, Counters(2.0, 10.0), [(0.0, 2.0)] * 10)  # ten sessions under 5 s old
    assert meter.speech_fraction is None and meter.per_session == 0.8
    assert meter.headroom(0) == 6  # 5 speech-s/s capacity / 0.8
    meter.observe(20.0, Counters(4.0, 20.0), [(3.0, 12.0)] * 10)  # settled: a quarter is speech
    assert meter.per_session == pytest.approx(0.25)
    assert meter.headroom(10) == 10  # 20 fit


def test_costs_from_the_first_short_finals_are_not_trusted() -> None:
    meter = CapacityMeter(halflife_s=1e-9)
    meter.observe(0.0, Counters())
    meter.observe(5.0, Counters(final_busy_s=0.5, final_audio_s=10.0, finals=4))
    assert meter.final_cost == pytest.approx(0.05) and meter.cost is None  # 10 s < 30 s
    assert meter.headroom(100) is None
    meter.observe(10.0, Counters(final_busy_s=2.0, final_audio_s=40.0, finals=10))
    assert meter.cost is not None and meter.headroom(0) is not None


def test_samples_are_averaged_over_the_half_life() -> None:
    meter = CapacityMeter(halflife_s=10.0)
    meter.observe(0.0, Counters())
    meter.observe(10.0, Counters(2.0, 10.0))  # cost 0.2: the first sample is taken as it is
    meter.observe(20.0, Counters(6.0, 20.0))  # cost 0.4, one half-life later: halfway
    assert meter.final_cost == pytest.approx(0.3)


async def test_the_meter_reads_its_costs_from_the_real_transcriber() -> None:
    meter = CapacityMeter(halflife_s=1e-9)
    audio = np.zeros(2 * 16000, np.float32)

    async with open_transcriber(SlowModel(0.1), TranscriberConfig()) as transcriber:
        meter.observe(trio.current_time(), Counters.of(transcriber.statistics()))
        for _ in range(6):
            await transcriber.transcribe(Request(audio), priority="final")
            await transcriber.transcribe(Request(audio[:16000]), priority="first_partial")
            await transcriber.transcribe(Request(audio), priority="partial")  # a revision
            await transcriber.transcribe(Request(audio), priority="background")  # not counted
        stats = transcriber.statistics()
        meter.observe(trio.current_time(), Counters.of(stats))
    assert (stats.final_audio_s, stats.finals) == pytest.approx((12.0, 6))
    assert (stats.partials, stats.first_partials) == (12, 6)
    assert meter.final_cost == pytest.approx(0.1, rel=0.3)  # 1.2 s of model time for 12 s
    assert meter.first_draft_cost == pytest.approx(0.1, rel=0.3)  # 0.1 s per 1 s draft
    assert meter.utterance_s == pytest.approx(2.0)


async def test_a_full_server_refuses_at_the_handshake_and_keeps_its_sessions(
    tmp_path: Path,
) -> None:
    app = create_app(Settings(model="fake", data_dir=tmp_path), model=FakeModel())
    weather = np.concatenate([load(DATA / "weather.wav"), np.zeros(16000, np.float32)])
    async with serve_app(app) as address:
        meter: CapacityMeter = runtime(app).capacity
        meter.final_cost, meter.speech_fraction = 0.75, 0.8  # one session fits (1.0 / 0.8)
        meter.trust_audio_s = 0
        meter._last_time = trio.current_time() + 3600  # hold these figures for the test
        async with connect(f"ws://{address}/v1/stream") as ws:
            await send_audio(ws, weather[:16000])
            refusal = await rejected(f"ws://{address}/v1/stream")
            assert refusal.status_code == 503
            assert refusal.headers is not None
            headers = {k.decode().lower(): v.decode() for k, v in refusal.headers}
            assert int(headers["retry-after"]) > 0
            assert json.loads(refusal.body or b"{}")["error"]["code"] == "at_capacity"
            async with httpx.AsyncClient() as http:
                health = (await http.get(f"http://{address}/health")).json()
                metrics = (await http.get(f"http://{address}/metrics")).text
            assert health["capacity"]["headroom"] == 0
            assert health["capacity"]["capacity_speech_s_per_s"] == pytest.approx(1.0)
            assert "chorus_admission_headroom_sessions 0" in metrics
            await send_audio(ws, weather[16000:])  # the admitted session goes on
            await send_json(ws, {"type": "stop"})
            frames = await receive_all(ws)
        assert frames[-1]["type"] == "stopped" and frames[-1]["utterances"] == 1
        with trio.fail_after(5):
            await runtime(app).live.wait_empty()
        async with connect(f"ws://{address}/v1/stream") as ws:  # room again once it left
            await send_json(ws, {"type": "stop"})
            assert (await receive_all(ws))[-1]["type"] == "stopped"


async def test_a_cold_server_takes_a_burst_then_waits_for_measurements(tmp_path: Path) -> None:
    settings = Settings(model="fake", data_dir=tmp_path, admission_cold_sessions=2)
    app = create_app(settings, model=FakeModel())
    async with (
        serve_app(app) as address,
        connect(f"ws://{address}/v1/stream") as first,
        connect(f"ws://{address}/v1/stream") as second,
    ):
        assert runtime(app).capacity.cost is None  # nothing measured yet
        refusal = await rejected(f"ws://{address}/v1/stream")
        assert refusal.status_code == 503
        for ws in (first, second):
            await send_json(ws, {"type": "stop"})
            assert (await receive_all(ws))[-1]["type"] == "stopped"
