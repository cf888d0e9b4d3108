"""`CHORUS_MODEL_ALIASES`: parsed (`protocol.openai.parse_model_aliases`), refused at start when
malformed, and resolved against the served model (`service.routes.openai_models.served`)."""

from __future__ import annotations

import pytest

from protocol.openai import DEFAULT_MODEL_ALIASES, parse_model_aliases
from service.config import Settings
from service.routes.openai_models import served

OPENAI_NAMES = [
    "whisper-1",
    "gpt-transcribe",
    "gpt-live-transcribe",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-realtime-whisper",
]


def test_the_default_names_every_openai_model_for_the_served_one() -> None:
    aliases = Settings().model_aliases
    assert aliases == parse_model_aliases(DEFAULT_MODEL_ALIASES)
    assert [name for name, _ in aliases] == OPENAI_NAMES
    assert {target for _, target in aliases} == {""}
    assert served("base", aliases) == ("base", *OPENAI_NAMES)


def test_a_list_from_the_environment() -> None:
    settings = Settings.from_env({"CHORUS_MODEL_ALIASES": " whisper-1= , mine=small ,tiny.en="})
    aliases = settings.model_aliases
    assert aliases == (("whisper-1", ""), ("mine", "small"), ("tiny.en", ""))
    assert served("small", aliases) == ("small", "whisper-1", "mine", "tiny.en")
    # an alias of another model is not served, and the model's own name comes once
    assert served("tiny.en", aliases) == ("tiny.en", "whisper-1")
    assert Settings.from_env({"CHORUS_MODEL_ALIASES": "none"}).model_aliases == ()
    assert served("base", ()) == ("base",)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("whisper-1", "write `name=`"),
        ("=base", "is not a model name"),
        ("white space=", "is not a model name"),
        ("ok=bad target", "is not a model name"),
        ("a=,a=base", "given twice"),
        ("x" * 200 + "=", "is not a model name"),
        (",".join(f"m{index}=" for index in range(65)), "at most 64"),
    ],
)
def test_a_malformed_list_stops_the_server(value: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Settings.from_env({"CHORUS_MODEL_ALIASES": value})
