"""Smoke test of the load generator against the real server: `chorus serve --model tiny.en`
started by the bench itself, two clients streaming a few seconds of real speech, and the JSON
report checked for every figure. No timing thresholds: only that the figures are there and sane.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import msgspec
import pytest
import trio
from support.audio_files import SPEECH

from bench.load import run
from bench.load_options import parse_arguments
from bench.noisy import parse_arguments as noisy_arguments
from bench.noisy import run as noisy_run
from bench.schema import RunFigures

CLIPS = ("ljspeech_coqui/LJ001-0002.wav", "ljspeech_coqui/LJ001-0004.wav")


def small_set(directory: Path) -> Path:
    """A TSV of two short clips (1.9 s and 5.1 s) of the tests' English set, for the bench,
    which would otherwise read the shared set (`../shared/speech`)."""
    with (SPEECH / "en_wer.tsv").open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle, delimiter="\t") if row["file"] in CLIPS]
    table = directory / "small.tsv"
    lines = ["file\tseconds\treference"]
    lines += [f"{SPEECH / row['file']}\t{row['seconds']}\t{row['reference']}" for row in rows]
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return table


async def test_two_clients_against_the_real_server(tmp_path: Path) -> None:
    settings = parse_arguments(
        [
            "--model", "tiny.en",
            "--clients", "2",
            "--seconds", "5",
            "--together-s", "0",  # not the sustained minute: 5 s conversations
            "--warm-up-s", "3",
            "--no-naive",
            "--same-speech",  # two clips each, so the finals below can be counted
            "--set", str(small_set(tmp_path)),
            "--out", str(tmp_path / "results"),
        ]
    )  # fmt: skip
    check_report(await run(settings))


def check_report(stem: Path) -> None:
    for suffix in (".json", ".md", "-latency.png", "-wer.png"):
        assert Path(f"{stem}{suffix}").stat().st_size > 0, suffix
    data = json.loads(Path(f"{stem}.json").read_text())
    (search,) = data["searches"]
    (raw,) = search["runs"]
    assert set(RunFigures.__struct_fields__) <= raw.keys()
    figures = msgspec.convert(raw, RunFigures)

    assert figures.clients == 2
    assert figures.sessions.started == figures.sessions.completed == 2, figures.failures
    assert figures.sessions.refused == figures.sessions.failed == 0
    assert figures.finals >= 4  # two clips, two clients
    for name in ("final_latency_s", "end_of_speech_latency_s", "first_partial_s"):
        spread = getattr(figures, name)
        assert spread.count > 0, name
        assert 0 < spread.p50 <= spread.p95 <= spread.p99 <= spread.max, name
    assert figures.partials_per_speech_s is not None
    assert figures.partials_per_speech_s > 0
    assert figures.wer is not None
    assert 0 <= figures.wer < 0.5  # tiny.en on read speech; a broken pipeline scores near 1
    assert figures.reference_words > 20
    assert figures.server is not None
    assert figures.server.cpu_cores > 0
    assert figures.server.peak_rss_mb > 50
    assert figures.transcriber is not None
    assert figures.transcriber.batches > 0
    assert figures.transcriber.items >= figures.finals
    assert figures.max_lag_s is None or figures.max_lag_s >= 0
    assert search["capacity"] in (0, 2)
    # E comes from this invocation: offline faster-whisper measured before the servers ran
    reference = data["reference"]
    assert reference["files"] >= 1 and reference["audio_s_per_wall_s"] > 0
    assert len(reference["passes"]) == 3  # the median pass of three is the reference
    assert reference["audio_s_per_wall_s"] == pytest.approx(sorted(reference["passes"])[1], 1e-3)
    (row,) = data["efficiency"]
    assert 0 < row["speech_fraction"] <= 1
    if search["capacity"]:
        expected = 2 * row["speech_fraction"] / reference["audio_s_per_wall_s"]
        assert row["efficiency"] == pytest.approx(expected)
    # caption delay, per run and per session, scored while both sessions were live
    caption = figures.caption_delay_s
    assert caption.count > 0
    assert caption.p50 is not None and caption.p95 is not None and caption.max is not None
    assert 0 <= caption.p50 <= caption.p95 <= caption.max < 10.0
    spread = figures.caption_delay_sessions
    assert spread is not None and len(spread.p95_s) == 2
    assert spread.worst_p95_s is not None and spread.median_p95_s is not None
    assert figures.together is not None and figures.together.scored
    assert 0 < figures.together.seconds <= figures.together.planned_s + 1.0
    assert search["caption_source"]
    assert search["warm_up"]["sessions"]["completed"] == 2  # before the first step, unscored
    launch = search["launch"]
    assert "serve" in launch["command"] and "--port" in launch["command"]
    assert launch["environment"]["CHORUS_MAX_SESSIONS_PER_CLIENT"] == "100000"
    assert launch["workers"] is None or launch["workers"] >= 1
    assert data["machine"]["cpu"]
    assert figures.first_text_s.count > 0  # the clips are longer than 2 s
    # negative when a partial comes before the first second of speech was even sent
    first_text = figures.first_text_s
    assert first_text.p50 is not None and first_text.p95 is not None
    assert -1.0 < first_text.p50 <= first_text.p95 < 5.0


async def test_soak_runs_its_three_phases_against_the_real_server(tmp_path: Path) -> None:
    """A tiny soak: 20 connect/disconnect cycles (half abrupt), 3 s of two streaming sessions,
    one round of attacks. Every phase reports; the churn and attack verdicts must hold."""
    from bench.soak import parse_arguments as soak_arguments
    from bench.soak import run as soak

    settings = soak_arguments(
        [
            "--model", "tiny.en",
            "--server-cmd", f"{sys.executable} -m service.cli serve",
            "--cycles", "20", "--concurrency", "4",
            "--minutes", "0.05", "--sessions", "2",
            "--attacks", "1",
            "--set", str(SPEECH / "en_wer.tsv"),
            "--out", str(tmp_path),
        ]
    )  # fmt: skip
    stem, phases = await soak(settings)
    assert [phase.name for phase in phases] == ["churn", "sustained", "attacks"]
    churn, _, attacks = phases
    assert churn.figures["failed cycles"] == 0 and churn.figures["live sessions after"] == 0
    assert attacks.ok, attacks.figures
    report = await trio.Path(f"{stem}.md").read_text()
    assert "## churn" in report and "## attacks: ok" in report


def test_noisy_streams_a_phone_call_through_the_real_server(tmp_path: Path) -> None:
    """`python -m bench.noisy --live 1`: the clip as a phone call through `chorus serve`, in
    real time, scored beside offline faster-whisper on the same audio."""
    table = small_set(tmp_path)
    arguments = ["--model", "tiny.en", "--set", str(table), "--limit", "1", "--live", "1"]
    arguments += ["--conditions", "telephone", "--out", str(tmp_path / "results")]
    stem = noisy_run(noisy_arguments(arguments))
    report = json.loads(Path(f"{stem}.json").read_text())
    assert report["options"]["live"] == "1" and report["options"]["conversations"] == "1"
    (condition,) = report["conditions"]
    (call,) = condition["clips"]
    assert call["clip"].endswith(CLIPS[0]) and call["finals"], call
    assert condition["streaming"]["wer"] <= 0.5 and condition["offline"]["wer"] <= 0.5
    assert condition["streaming"]["wall_s"] >= 1.9  # real time: the clip is 1.9 s long
    assert (tmp_path / "results" / "noisy-live-telephone.log").stat().st_size > 0
