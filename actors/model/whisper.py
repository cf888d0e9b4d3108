"""The one module that imports faster-whisper and CTranslate2: a batched Whisper adapter.

`WhisperAdapter.transcribe_batch` is called by the transcriber actor in its worker thread. It
turns requests into log-mel windows, groups those that can share one CTranslate2 call (same
window length, same number of prompt tokens before `<|startoftranscript|>`, same beam size),
encodes each group once, detects languages where asked, decodes, and aligns words when asked.

Windows: Whisper is trained on 30 s windows, but CTranslate2 accepts shorter ones. A window
needs silence after the speech, or the decoder loops ("And so my fellow Americans. And so my
fellow Americans…"). Measured on the shared English set (38 clips under 30 s, beam 5, int8, 2
threads): tiny.en WER 5.34% on 30 s windows, 17.1% on windows rounded up to 5 s, 4.93% on
windows of twice the audio rounded up to 5 s (1.55x faster); base 4.66% / 8.77% / 4.79%. So the
window is `WINDOW_FACTOR` (2) times the audio, rounded up to `bucket_s` (5 s), at least 10 s
(a 2.4 s utterance in a 5 s window still looped) and at most 30 s; 4.93% with that floor too.
`bucket_s=30` gives Whisper's standard window (the naive baseline uses that).

Models bigger than tiny loop less, and their windows need less room: for them
(`final_window="pad"`, what `final_window_for` picks) a final's window is the audio plus
`FINAL_PAD_S` (3 s), same buckets and floor, so an 8 s utterance gets 15 s instead of 20 s.
Streaming finals of the shared English set, clean, under 10 dB babble and over a telephone
line, beam 5: base took 20-23% less model time with WER within 0.12 points of twice the audio
in each condition, natively (AVX-512) and held to AVX2; tiny.en lost 0.48 points on the
telephone set natively, so tiny models keep twice the audio.

Loop guard: a tight window still loops now and then, and where it does depends on the CPU's
int8 kernels (on an AVX2-only EPYC, tiny.en repeated LJ001-0011 twice over in a 10 s window;
with AVX-512 it did not). A result that looks looped (a run of words repeated back to back,
a compression ratio over 2.4, or a generation that ran into `max_length`) is decoded once more
in a 30 s window, and the wider answer is kept. Measured on the shared English set with the
streaming segmenter, CTranslate2 forced to AVX2: tiny.en 8.06% -> 5.45%.

Context: `DecodeOptions.context` carries the session's earlier finals. Its last
`CONTEXT_TOKENS` tokens go before `<|startoftranscript|>` (after the client's own prompt), so
an utterance cut at a pause keeps the sense of what came before ("ask not" alone read "Knock!").
The count is fixed so that sessions with enough history share one batch.

BLAS: the only BLAS call here is the mel filterbank (80 x 201 by the window's frames, about
0.2 ms). numpy's OpenBLAS starts a pool of as many threads as cores, and they spin after each
call, taking the cores the model workers run on: two workers transcribing at once (tiny.en,
2 cores) took 8.6 s wall and 17.0 s CPU with the pool, 5.7 s and 11.2 s with BLAS on one thread.
So loading the adapter sets numpy's BLAS to one thread for the process (`_one_blas_thread`),
unless `OPENBLAS_NUM_THREADS` says otherwise.

Committed words: `DecodeOptions.committed` (the words two drafts of an open utterance agreed on)
go after `<|notimestamps|>`, so the decoder reads them in one pass and generates only the rest;
CTranslate2 takes forced prefixes of different lengths in one batch, and returns them as the
start of the text.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import zlib
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import ctranslate2
import numpy as np
import threadpoolctl
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens, merge_punctuations

from actors.model.port import SAMPLE_RATE, Request, Result, Samples, WordTiming
from actors.model.weights import ModelNotFound, ResolvedModel
from protocol.dialects.common import APPEND_MARKS, PREPEND_MARKS

log = logging.getLogger(__name__)

FinalWindow = Literal["double", "pad"]
"""How a final's encoder window grows with its audio (see the module's docstring)."""

WINDOW_S = 30.0
PARTIAL_PAD_S = 1.0
PARTIAL_BUCKET_S = 2.0
CONTEXT_TOKENS = 32
MAX_PROMPT_TOKENS = 223
PROMPTS_CACHED = 64  # distinct prompts kept tokenized
WINDOW_FACTOR = 2.0
FINAL_PAD_S = 3.0
MIN_WINDOW_S = 10.0
FRAMES_PER_SECOND = 100
HALLUCINATIONS = (
    "thank you for watching",
    "thanks for watching",
    "subscribe",
    "subtitles by",
    "amara.org",
    "please like",
    "see you in the next video",
    "transcription by",
)


class WhisperAdapter:
    """A loaded Whisper model; `transcribe_batch` blocks and runs in one thread at a time."""

    def __init__(
        self,
        resolved: ResolvedModel,
        *,
        device: str = "auto",
        compute_type: str = "default",
        cpu_threads: int = 0,
        bucket_s: float = 5.0,
        workers: int = 0,
        tight_partials: bool = True,
        final_window: FinalWindow | None = None,
    ) -> None:
        _one_blas_thread()
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        if compute_type == "default":
            compute_type = "int8" if device == "cpu" else "float16"
        threads = cpu_threads or min(os.cpu_count() or 1, 8)
        workers = workers or _default_workers(device, threads)
        try:
            self._whisper = WhisperModel(
                resolved.source,
                device=device,
                compute_type=compute_type,
                cpu_threads=max(1, threads // workers),
                num_workers=workers,
                local_files_only=resolved.kind != "hub",
            )
        except Exception as error:
            tried = "; ".join((*resolved.tried, f"{resolved.kind} {resolved.source}"))
            raise ModelNotFound(
                f"could not load model {resolved.name!r} (tried {tried}): "
                f"{type(error).__name__}: {' '.join(str(error).split())}"
            ) from error
        self.name = resolved.name
        self.device = self._whisper.model.device
        self.compute_type = compute_type
        self.multilingual = bool(self._whisper.model.is_multilingual)
        self.languages = tuple(self._whisper.supported_languages)
        self.bucket_s = min(max(bucket_s, 1.0), WINDOW_S)
        self.tight_partials = tight_partials
        self.final_window: FinalWindow = final_window or final_window_for(resolved.name)
        self.workers = workers
        self.pad_to_longest = self.device == "cuda"
        self._tokenizers: dict[tuple[str, str], Tokenizer] = {}
        # a file's or session's prompt is the same for each of its utterances: tokenized once
        self._prompt_tokens = functools.lru_cache(maxsize=PROMPTS_CACHED)(self._encode)

    # -- the public call -------------------------------------------------------------------

    def transcribe_batch(self, requests: Sequence[Request]) -> list[Result]:
        results: list[Result | None] = [None] * len(requests)
        groups: dict[tuple[int, int, int], list[int]] = defaultdict(list)
        prompts = [self._prefix(request) for request in requests]
        for index, request in enumerate(requests):
            # On a GPU one wide call beats several narrow ones: pad to the longest window.
            # On a CPU the encoder's cost grows with batch x window, so keep windows apart.
            frames = 0 if self.pad_to_longest else self._window(request)
            groups[(frames, len(prompts[index]), request.options.beam_size)].append(index)
        for (frames, _, beam_size), indices in groups.items():
            if not frames:
                frames = max(self._window(requests[i]) for i in indices)
            outputs = self._run_group(
                [requests[i] for i in indices], [prompts[i] for i in indices], frames, beam_size
            )
            for index, result in zip(indices, outputs, strict=True):
                results[index] = result
        self._retry_loops(requests, prompts, results)
        return [result for result in results if result is not None]

    def _retry_loops(
        self, requests: Sequence[Request], prompts: list[list[int]], results: list[Result | None]
    ) -> None:
        """Decode looped results once more in a 30 s window; keep the wider answer."""
        full = int(WINDOW_S * FRAMES_PER_SECOND)
        retry: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, result in enumerate(results):
            looped = result is not None and any(f.startswith("looped") for f in result.flags)
            if looped and requests[index].options.partial:
                assert result is not None
                text = _before_repeat(result.text)
                words = result.words[: len(text.split())]
                results[index] = attrs.evolve(result, text=text, words=words)
            elif looped and self._window(requests[index]) < full:
                retry[(len(prompts[index]), requests[index].options.beam_size)].append(index)
        for (_, beam_size), indices in retry.items():
            outputs = self._run_group(
                [requests[i] for i in indices], [prompts[i] for i in indices], full, beam_size
            )
            for index, result in zip(indices, outputs, strict=True):
                results[index] = attrs.evolve(result, flags=(*result.flags, _WIDENED))

    # -- pieces ----------------------------------------------------------------------------

    def _window(self, request: Request) -> int:
        """Encoder frames for a request: partials tight to the audio, finals by the rule below.

        A partial is a draft that the final replaces, and the encoder's cost grows with the
        window, so a partial gets the audio plus `PARTIAL_PAD_S`, rounded up to
        `PARTIAL_BUCKET_S` (a 1.8 s draft: a 4 s window where the finals' rule gives 10 s). A
        draft that loops there is cut where the repeat begins instead of decoded again.
        """
        if not (request.options.partial and self.tight_partials) or self.bucket_s >= WINDOW_S:
            return self._window_frames(request.audio)
        seconds = len(request.audio) / SAMPLE_RATE + PARTIAL_PAD_S
        window = math.ceil(seconds / PARTIAL_BUCKET_S) * PARTIAL_BUCKET_S
        return int(min(WINDOW_S, window) * FRAMES_PER_SECOND)

    def _window_frames(self, audio: Samples) -> int:
        """Encoder window: twice the audio (`final_window="pad"`: the audio + 3 s), rounded up
        to `bucket_s`, within [10 s, 30 s]."""
        audio_s = len(audio) / SAMPLE_RATE
        seconds = (
            audio_s * WINDOW_FACTOR if self.final_window == "double" else audio_s + FINAL_PAD_S
        )
        window = max(MIN_WINDOW_S, math.ceil(seconds / self.bucket_s) * self.bucket_s)
        return int(min(WINDOW_S, window) * FRAMES_PER_SECOND)

    def _tokenizer(self, language: str, task: str) -> Tokenizer:
        key = (language, task)
        if key not in self._tokenizers:
            self._tokenizers[key] = Tokenizer(
                self._whisper.hf_tokenizer, self.multilingual, task=task, language=language
            )
        return self._tokenizers[key]

    def _prefix(self, request: Request) -> list[int]:
        """Tokens before `<|startoftranscript|>`: the client's prompt, then the context's tail."""
        options = request.options
        if not options.prompt and not options.context:
            return []
        tokenizer = self._tokenizer("en", "transcribe")
        context = tokenizer.encode(" " + options.context.strip()) if options.context else []
        context = context[-CONTEXT_TOKENS:]
        prompt = list(self._prompt_tokens(options.prompt)) if options.prompt else []
        tokens = [*prompt, *context][-(MAX_PROMPT_TOKENS - 1) :]
        return [tokenizer.sot_prev, *tokens]

    def _encode(self, prompt: str) -> tuple[int, ...]:
        return tuple(self._tokenizer("en", "transcribe").encode(" " + prompt.strip()))

    def _features(self, audio: Samples, frames: int) -> np.ndarray[Any, Any]:
        padded = np.zeros(frames * SAMPLE_RATE // FRAMES_PER_SECOND, dtype=np.float32)
        usable = audio[: len(padded)]
        padded[: len(usable)] = usable
        mel = self._whisper.feature_extractor(padded, padding=160)
        return np.ascontiguousarray(mel[:, :frames])

    def _run_group(
        self, requests: list[Request], prefixes: list[list[int]], frames: int, beam_size: int
    ) -> list[Result]:
        features = np.stack([self._features(request.audio, frames) for request in requests])
        encoded = self._whisper.model.encode(
            ctranslate2.StorageView.from_array(features), to_cpu=False
        )
        languages, language_probs = self._languages(requests, encoded)
        prompts: list[list[int]] = []
        forced_counts: list[int] = []
        tokenizers: list[Tokenizer] = []
        for request, prefix, language in zip(requests, prefixes, languages, strict=True):
            tokenizer = self._tokenizer(language, request.options.task)
            tokenizers.append(tokenizer)
            forced = request.options.committed
            committed = tokenizer.encode(" " + forced.strip()) if forced else []
            prompts.append([*prefix, *tokenizer.sot_sequence, tokenizer.no_timestamps, *committed])
            forced_counts.append(len(committed))
        longest = max(len(request.audio) for request in requests) / SAMPLE_RATE
        max_length = min(448, max(len(p) for p in prompts) + 16 + int(longest * 12))
        outputs = self._whisper.model.generate(
            encoded,
            prompts,
            beam_size=beam_size,
            max_length=max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(tokenizers[0], (-1,)) or ()),
        )
        results = []
        for index, output in enumerate(outputs):
            tokens = [token for token in output.sequences_ids[0] if token < tokenizers[index].eot]
            text = tokenizers[index].decode(tokens).strip()
            length = len(output.sequences_ids[0]) - forced_counts[index]  # generated tokens
            if length:
                avg_logprob = output.scores[0] * length / (length + 1)
            else:  # nothing generated: after committed words that is an end, not a doubt
                avg_logprob = 0.0 if forced_counts[index] else -10.0
            result = self._judge(
                text,
                tokens,
                languages[index],
                language_probs[index],
                avg_logprob,
                output.no_speech_prob,
            )
            if result.text and (
                length >= max_length - len(prompts[index])
                or result.compression_ratio > 2.4
                or _repeats(text)
            ):
                result = attrs.evolve(result, flags=(*result.flags, _LOOPED))
            results.append(result)
        wanted = [
            i for i, request in enumerate(requests) if request.options.words and results[i].text
        ]
        if wanted:
            self._add_words(results, wanted, requests, tokenizers, encoded, features, frames)
        return results

    def _languages(
        self, requests: list[Request], encoded: ctranslate2.StorageView
    ) -> tuple[list[str], list[float]]:
        languages = [request.options.language or "" for request in requests]
        probabilities = [1.0] * len(requests)
        if not self.multilingual:
            return ["en"] * len(requests), probabilities
        if any(not language for language in languages):
            detected = self._whisper.model.detect_language(encoded)
            for index, ranked in enumerate(detected):
                if not languages[index]:
                    token, probability = ranked[0]
                    languages[index] = token[2:-2]
                    probabilities[index] = float(probability)
        return languages, probabilities

    def _judge(
        self,
        text: str,
        tokens: list[int],
        language: str,
        language_prob: float,
        avg_logprob: float,
        no_speech_prob: float,
    ) -> Result:
        """Whisper's own silence rule, plus flags for text that is likely made up."""
        flags: list[str] = []
        ratio = _compression_ratio(text)
        silent = no_speech_prob > 0.6 and (avg_logprob < -1.0 or ratio > 2.4)
        if silent or no_speech_prob > 0.9:
            flags.append(f"no_speech: p={no_speech_prob:.2f}, avg_logprob={avg_logprob:.2f}")
            text = ""
        elif avg_logprob < -1.0:
            flags.append(f"low_confidence: avg_logprob={avg_logprob:.2f}")
        if ratio > 2.4:
            flags.append(f"repetition: compression_ratio={ratio:.2f}")
        lowered = text.lower()
        if any(phrase in lowered for phrase in HALLUCINATIONS):
            flags.append("suspected_hallucination: a phrase Whisper often invents on silence")
        return Result(
            text=text,
            language=language,
            language_probability=language_prob,
            avg_logprob=avg_logprob,
            no_speech_prob=no_speech_prob,
            compression_ratio=ratio,
            flags=tuple(flags),
        )

    def _add_words(
        self,
        results: list[Result],
        wanted: list[int],
        requests: list[Request],
        tokenizers: list[Tokenizer],
        encoded: ctranslate2.StorageView,
        features: np.ndarray[Any, Any],
        frames: int,
    ) -> None:
        by_tokenizer: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for index in wanted:
            by_tokenizer[tuple(tokenizers[index].sot_sequence)].append(index)
        for indices in by_tokenizer.values():
            tokenizer = tokenizers[indices[0]]
            if len(indices) == len(requests):
                group_encoded = encoded
            else:
                group_encoded = self._whisper.model.encode(
                    ctranslate2.StorageView.from_array(np.ascontiguousarray(features[indices])),
                    to_cpu=False,
                )
            text_tokens = [tokenizer.encode(" " + results[i].text) for i in indices]
            num_frames = [
                min(frames, len(requests[i].audio) * 100 // SAMPLE_RATE) // 2 * 2 for i in indices
            ]
            alignments = self._whisper.find_alignment(
                tokenizer, text_tokens, group_encoded, max(num_frames)
            )
            for index, words in zip(indices, alignments, strict=True):
                merge_punctuations(words, PREPEND_MARKS, APPEND_MARKS)
                limit = len(requests[index].audio) / SAMPLE_RATE
                timings = tuple(
                    WordTiming(
                        word["word"].strip(),
                        round(min(float(word["start"]), limit), 3),
                        round(min(float(word["end"]), limit), 3),
                        round(float(word["probability"]), 3),
                    )
                    for word in words
                    if word["word"].strip()
                )
                results[index] = _with_words(results[index], timings)


def final_window_for(name: str) -> FinalWindow:
    """The finals' window rule for a model (see the module's docstring): twice the audio for
    tiny models, the audio + `FINAL_PAD_S` for bigger ones."""
    return "double" if "tiny" in Path(name).name.lower() else "pad"


def _one_blas_thread() -> None:
    """numpy's BLAS on one thread for the whole process (see the module's docstring), unless
    the environment chose a number; an application mounting Chorus keeps its own choice."""
    if "OPENBLAS_NUM_THREADS" not in os.environ:
        threadpoolctl.threadpool_limits(limits=1, user_api="blas")


def _default_workers(device: str, threads: int) -> int:
    """Model workers when not given: on a CPU one per thread up to 2 threads, then one per 2
    (on 2 cores, 2 workers x 1 thread held twice the live sessions of 1 x 2: small matrices
    do not spread over threads); one on a GPU, where one wide batch beats several narrow."""
    if device == "cuda":
        return 1
    return threads if threads <= 2 else threads // 2


_LOOPED = "looped: a phrase repeated back to back, or the generation ran out of length"
_WIDENED = "widened: decoded again in a 30 s window"


def _repeat_start(text: str, shortest: int = 3, longest: int = 6) -> int | None:
    """Index of the word where a phrase starts again, or None: `shortest`+ words back to back
    ("a b c a b c"), or `longest` words anywhere (a loop cut short by the length limit)."""
    words = [word.strip(".,!?;:").lower() for word in text.split()]
    starts = []
    for lag in range(shortest, len(words)):
        run = 0  # how many words in a row equal the word `lag` places later
        for index, (here, there) in enumerate(zip(words, words[lag:], strict=False)):
            run = run + 1 if here == there else 0
            if run >= min(lag, longest):
                starts.append(index - run + 1 + lag)
                break
    return min(starts, default=None)


def _repeats(text: str) -> bool:
    return _repeat_start(text) is not None


def _before_repeat(text: str) -> str:
    """`text` up to where a phrase starts again, else unchanged."""
    start = _repeat_start(text)
    return text if start is None else " ".join(text.split()[:start])


def _with_words(result: Result, words: tuple[WordTiming, ...]) -> Result:
    return attrs.evolve(result, words=words)


def _compression_ratio(text: str) -> float:
    if not text:
        return 0.0
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))
