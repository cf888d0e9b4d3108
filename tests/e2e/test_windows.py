"""Encoder windows (`actors/model/windows.py`): finals get twice their audio under tiny models
and the audio + 3 s under bigger ones, in 5 s buckets within [10 s, 30 s]; partials stay tight
to the audio; the setting picks the rule."""

from __future__ import annotations

import numpy as np
import pytest

from actors.model.port import DecodeOptions, Request
from actors.model.whisper import WhisperAdapter
from actors.model.windows import FinalWindow, final_window_for
from service.cli import build_parser
from service.config import Settings


class _Windows(WhisperAdapter):
    """The real window rules, with no model loaded."""

    def __init__(self, final_window: FinalWindow, bucket_s: float = 5.0) -> None:
        self.bucket_s = bucket_s
        self.final_window = final_window
        self.tight_partials = True


def seconds(model: WhisperAdapter, audio_s: float, *, partial: bool = False) -> float:
    audio = np.zeros(int(audio_s * 16000), np.float32)
    return model._window(Request(audio, DecodeOptions(partial=partial))) / 100


@pytest.mark.parametrize(
    ("audio_s", "double", "pad"),
    [
        (2.0, 10, 10),  # the 10 s floor: short windows loop
        (6.0, 15, 10),
        (7.0, 15, 10),
        (7.5, 15, 15),
        (8.0, 20, 15),
        (12.0, 25, 15),
        (12.5, 25, 20),
        (16.0, 30, 20),
        (28.0, 30, 30),  # never past Whisper's 30 s
    ],
)
def test_final_windows(audio_s: float, double: float, pad: float) -> None:
    assert seconds(_Windows("double"), audio_s) == double
    assert seconds(_Windows("pad"), audio_s) == pad


def test_partials_and_the_naive_window_do_not_follow_the_finals_rule() -> None:
    for rule in ("double", "pad"):
        assert seconds(_Windows(rule), 1.8, partial=True) == 4  # audio + 1 s, 2 s buckets
        assert seconds(_Windows(rule, bucket_s=30.0), 4.0) == 30  # the naive baseline


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("tiny.en", "double"),
        ("tiny", "double"),
        ("/models/whisper-tiny-ct2", "double"),
        ("base", "pad"),
        ("base.en", "pad"),
        ("small", "pad"),
        ("Systran/faster-whisper-large-v3", "pad"),
    ],
)
def test_the_rule_follows_the_model_size(name: str, rule: str) -> None:
    assert final_window_for(name) == rule


def test_the_setting_picks_the_rule() -> None:
    assert Settings.from_env({}).final_window == "auto"
    assert Settings.from_env({"CHORUS_FINAL_WINDOW": "double"}).final_window == "double"
    with pytest.raises(ValueError, match="final_window"):
        Settings.from_env({"CHORUS_FINAL_WINDOW": "wide"})
    parsed = build_parser().parse_args(["serve", "--final-window", "pad"])
    assert parsed.final_window == "pad"


def test_a_real_model_loads_with_its_rule(tiny_model: WhisperAdapter) -> None:
    assert tiny_model.final_window == "double"
    assert seconds(tiny_model, 8.0) == 20
