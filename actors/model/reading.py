"""Reading one request's decode: CTranslate2's output made a judged `Result`, and the
lead-in's share of it (its tokens forced before the text, its aligned words dropped).

Used by the Whisper adapter (`actors/model/whisper.py`) for every request it decodes.
"""

from __future__ import annotations

from typing import Any

import attrs
import ctranslate2
from faster_whisper.tokenizer import Tokenizer

from actors.model.judging import judge, mark_loop
from actors.model.port import SAMPLE_RATE, Request, Result, TokenUsage

__all__ = ["after_lead", "lead_tokens", "own_seconds", "read_output"]


def own_seconds(request: Request) -> float:
    """The request's audio after its lead-in (the previous final's audio), in seconds."""
    lead_s = request.options.lead_in_s if request.options.lead_in else 0.0
    return len(request.audio) / SAMPLE_RATE - lead_s


def lead_tokens(tokenizer: Tokenizer, lead_in: str | None) -> list[int]:
    return tokenizer.encode(" " + lead_in.strip()) if lead_in and lead_in.strip() else []


def after_lead(words: list[dict[str, Any]], lead: int) -> list[dict[str, Any]]:
    """The aligned words after the first `lead` tokens (the lead-in's words)."""
    seen = 0
    for index, word in enumerate(words):
        if seen >= lead:
            return words[index:]
        seen += len(word["tokens"])
    return []


def read_output(
    output: ctranslate2.models.WhisperGenerationResult,
    tokenizer: Tokenizer,
    forced: int,
    lead: int,
    language: tuple[str, float],
    *,
    room: int,
    usage: TokenUsage,
    seconds: float | None = None,
) -> Result:
    """One request's result from CTranslate2's output: its text, judged (`judging.judge`; a
    final's own `seconds` given), and flagged as looped when it looks so or used all the
    `room` its prompt left; `usage` (the window and the prompt) gets the generated tokens
    added."""
    tokens = [token for token in output.sequences_ids[0][lead:] if token < tokenizer.eot]
    text = tokenizer.decode(tokens).strip()
    length = len(output.sequences_ids[0]) - forced  # generated tokens
    avg_logprob = output.scores[0] * length / (length + 1) if length else -10.0
    if not length and forced:  # nothing generated after committed words: an end, not a doubt
        avg_logprob = 0.0
    result = judge(text, *language, avg_logprob, output.no_speech_prob, seconds=seconds)
    result = attrs.evolve(result, tokens=attrs.evolve(usage, output=max(0, length)))
    return mark_loop(result, text, ran_out=length >= room)
