"""Deepgram Flux's query parameters (`WS /v2/listen`) and its turn thresholds.

Sans-IO. `parse_flux_query` turns the query into a native `Config` and the thresholds
(`FluxThresholds`) that `protocol.dialects.flux.FluxCodec` ends turns by; a `Configure`
message changes the thresholds mid-stream (`FluxThresholds.updated`), checked by the same
`FluxThresholds.problem`. Parameters: `model` (`flux-general-en`; `flux-general-multi`
detects the language), `encoding` (`linear16`, `mulaw`, `alaw` raw; `opus`,
`ogg-opus` or none: detected from the bytes), `sample_rate` (default 16000, 8000 for
mulaw/alaw), `eot_threshold` (0.5-1.0, default 0.7), `eager_eot_threshold` (0.3-1.0 and at
most `eot_threshold`; off by default), `eot_timeout_ms` (500-10000, default 5000), `keyterm`
(repeated, given here by the route); the rest (`language_hint`, `numerals`, `tag`,
`mip_opt_out`, ...) are accepted and ignored. A bad one raises `QueryError`, which the route
answers with HTTP 400 before the upgrade.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeVar

import attrs

from protocol.dialects.deepgram import QueryError
from protocol.dialects.flux_messages import Thresholds
from protocol.native import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, Config, Encoding

MAX_EOT_TIMEOUT_MS = 10_000
RAW: dict[str, tuple[Encoding, int]] = {
    "linear16": ("pcm_s16le", 2),
    "mulaw": ("mulaw", 1),
    "alaw": ("alaw", 1),
}
CONTAINERS = frozenset({"opus", "ogg-opus"})


@attrs.frozen
class FluxThresholds:
    eot_threshold: float = 0.7
    eager_eot_threshold: float | None = None
    eot_timeout_ms: int = 5000

    def problem(self) -> tuple[str, str] | None:
        """(parameter, why) when these thresholds are out of range, else None."""
        if not 0.5 <= self.eot_threshold <= 1.0:
            return "eot_threshold", f"eot_threshold must be in [0.5, 1.0], not {self.eot_threshold}"
        eager = self.eager_eot_threshold
        if eager is not None and not 0.3 <= eager <= self.eot_threshold:
            return "eager_eot_threshold", (
                f"eager_eot_threshold must be in [0.3, eot_threshold={self.eot_threshold}], "
                f"not {eager}"
            )
        if not 500 <= self.eot_timeout_ms <= MAX_EOT_TIMEOUT_MS:
            return "eot_timeout_ms", (
                f"eot_timeout_ms must be in [500, {MAX_EOT_TIMEOUT_MS}], not {self.eot_timeout_ms}"
            )
        return None

    def updated(self, given: Thresholds) -> FluxThresholds:
        """These thresholds with what a `Configure` gave replaced."""
        return FluxThresholds(
            eot_threshold=_or(given.eot_threshold, self.eot_threshold),
            eager_eot_threshold=_or(given.eager_eot_threshold, self.eager_eot_threshold),
            eot_timeout_ms=_or(given.eot_timeout_ms, self.eot_timeout_ms),
        )

    def wire(self) -> Thresholds:
        return Thresholds(
            eot_threshold=self.eot_threshold,
            eager_eot_threshold=self.eager_eot_threshold,
            eot_timeout_ms=self.eot_timeout_ms,
        )


T = TypeVar("T")


def _or(given: T | None, kept: T) -> T:
    return kept if given is None else given


def _number(params: Mapping[str, str], name: str) -> float | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not re.fullmatch(r"\d{1,5}(\.\d{1,6})?", value):
        raise QueryError(name, f"{name} must be a number, not {value!r}")
    return float(value)


def parse_flux_query(
    params: Mapping[str, str], keyterms: list[str] | None = None
) -> tuple[Config, FluxThresholds, int]:
    """Flux query parameters → (native config, thresholds, audio bytes a second, 0 when a
    container); raises `QueryError`."""
    encoding = params.get("encoding") or None
    if encoding is not None and encoding not in CONTAINERS | RAW.keys():
        raise QueryError("encoding", f"encoding {encoding!r} is not supported")
    native, width = RAW.get(encoding or "", ("auto", 0))
    rate = _number(params, "sample_rate") or (8000 if width == 1 else 16000)
    if rate != int(rate) or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise QueryError(
            "sample_rate", f"sample_rate must be in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}]"
        )
    eot, eager = _number(params, "eot_threshold"), _number(params, "eager_eot_threshold")
    timeout = _number(params, "eot_timeout_ms")
    thresholds = FluxThresholds().updated(
        Thresholds(
            eot_threshold=eot,
            eager_eot_threshold=eager,
            eot_timeout_ms=None if timeout is None else int(timeout),
        )
    )
    if (problem := thresholds.problem()) is not None:
        raise QueryError(*problem)
    multi = (params.get("model") or "").endswith("-multi")
    config = Config(
        sample_rate=int(rate),
        encoding=native,
        language="auto" if multi else "en",
        interim=True,
        endpointing_ms=MAX_EOT_TIMEOUT_MS,  # a backstop: the codec ends turns
        max_utterance_s=30.0,
        words=True,
        keyterms=keyterms,
    )
    return config, thresholds, int(rate) * width
