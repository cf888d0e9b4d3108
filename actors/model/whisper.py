"""The one module that imports faster-whisper and CTranslate2: a batched Whisper adapter.

`WhisperAdapter.transcribe_batch` is called by the transcriber actor in its worker thread. It
turns requests into log-mel windows, groups those that can share one CTranslate2 call (same
window length, or any for greedy drafts, which pad to the longest; same number of prompt tokens
before `<|startoftranscript|>`; same beam size), encodes each group once, detects languages
where asked, decodes, and aligns words when asked.
Two kinds of final are decoded once more in the same call, both rare: one that looped (in a
30 s window) and one that skipped a phrase (without the session's context, `_retry_sparse`).
How long a request's window is, and how many tokens it may write: `actors/model/windows.py`.
What a decoded text is worth (the silence rule, flags for made-up text, the loop guard, a short
final the decoder was unsure of): `actors/model/judging.py`; reading one decode's output into
a judged result: `actors/model/reading.py`.

Context: `DecodeOptions.context` carries the session's earlier finals. Its last
`CONTEXT_TOKENS` tokens go before `<|startoftranscript|>` (after the client's own prompt), so
an utterance cut at a pause keeps the sense of what came before ("ask not" alone read "Knock!").
The count is fixed so that sessions with enough history share one batch.

Committed words: `DecodeOptions.committed` (the words two drafts of an open utterance agreed on)
go after `<|notimestamps|>`, so the decoder writes only the rest (each forced token still
costs a decoding step: docs/benchmarks.md); CTranslate2 takes forced prefixes of different
lengths in one batch, and returns them as the start of the text.

Lead-in: `DecodeOptions.lead_in` is the previous final's text, whose audio opens the request's
audio. It is forced before any committed words, and its tokens are left out of the result's
text; its words, when words are asked for, are aligned with the rest (the alignment needs the
whole text of the audio) and then dropped, and the rest's timings moved back by `lead_in_s`.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import attrs
import ctranslate2
import numpy as np
import threadpoolctl
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens, merge_punctuations

from actors.model.judging import (
    WIDENED,
    cut_loop,
    fuller,
    looped,
    sparse,
)
from actors.model.port import SAMPLE_RATE, Request, Result, Samples, TokenUsage, WordTiming
from actors.model.reading import after_lead, lead_tokens, own_seconds, read_output
from actors.model.weights import ModelNotFound, ResolvedModel
from actors.model.windows import (
    FRAMES_PER_SECOND,
    FULL_WINDOW,
    WINDOW_S,
    FinalWindow,
    final_frames,
    final_window_for,
    max_length,
    partial_frames,
    token_cap,
)
from protocol.dialects.common import APPEND_MARKS, PREPEND_MARKS

__all__ = ["CONTEXT_TOKENS", "WhisperAdapter"]

log = logging.getLogger(__name__)

CONTEXT_TOKENS = 32
MAX_PROMPT_TOKENS = 223
PROMPTS_CACHED = 64  # distinct prompts kept tokenized


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
        results = self._decode(requests)
        self._retry_sparse(requests, results)
        return results

    def _decode(self, requests: Sequence[Request]) -> list[Result]:
        results: list[Result | None] = [None] * len(requests)
        groups: dict[tuple[int, int, int], list[int]] = defaultdict(list)
        prompts = [self._prefix(request) for request in requests]
        for index, request in enumerate(requests):
            # a CPU encoder's cost grows with batch x window: finals keep their windows apart
            frames = 0 if self._shares_window(request) else self._window(request)
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
        """Decode looped finals once more in a 30 s window, keeping the wider answer; cut
        looped drafts where the repeat begins."""
        retry: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, result in enumerate(results):
            if result is None or not looped(result):
                continue
            if requests[index].options.partial:
                results[index] = cut_loop(result)
            elif self._window(requests[index]) < FULL_WINDOW:
                retry[(len(prompts[index]), requests[index].options.beam_size)].append(index)
        for (_, beam_size), indices in retry.items():
            batch, batch_prompts = [requests[i] for i in indices], [prompts[i] for i in indices]
            outputs = self._run_group(batch, batch_prompts, FULL_WINDOW, beam_size)
            for index, result in zip(indices, outputs, strict=True):
                results[index] = attrs.evolve(result, flags=(*result.flags, WIDENED))

    def _retry_sparse(self, requests: Sequence[Request], results: list[Result]) -> None:
        """Decode finals that skipped a phrase (`judging.sparse`) once more without the
        session's context, keeping that answer where it is `judging.fuller`."""
        indices = [
            index
            for index, request in enumerate(requests)
            if request.options.context
            and not request.options.partial
            and sparse(results[index], own_seconds(request))
        ]
        if not indices:
            return
        again = self._decode(
            [
                attrs.evolve(requests[i], options=attrs.evolve(requests[i].options, context=None))
                for i in indices
            ]
        )
        for index, second in zip(indices, again, strict=True):
            results[index] = fuller(results[index], second) or attrs.evolve(
                results[index], tokens=results[index].tokens + second.tokens
            )

    # -- pieces ----------------------------------------------------------------------------

    def _shares_window(self, request: Request) -> bool:
        """Whether a request is encoded in its group's longest window: all on a GPU; greedy
        drafts on a CPU, whose short windows cost less to pad than the decoding steps a
        shared batch saves (measured: docs/benchmarks.md)."""
        options = request.options
        return self.pad_to_longest or (options.partial and options.beam_size == 1)

    def _window(self, request: Request) -> int:
        """Encoder frames for a request (`actors/model/windows.py`): partials tight to the
        audio, unless told otherwise or the windows are Whisper's standard 30 s."""
        if request.options.partial and self.tight_partials and self.bucket_s < WINDOW_S:
            return partial_frames(len(request.audio))
        return final_frames(len(request.audio), self.bucket_s, self.final_window)

    def _tokenizer(self, language: str, task: str) -> Tokenizer:
        key = (language, task)
        if key not in self._tokenizers:
            self._tokenizers[key] = Tokenizer(
                self._whisper.hf_tokenizer, self.multilingual, task=task, language=language
            )
        return self._tokenizers[key]

    def _prefix(self, request: Request) -> list[int]:
        """Tokens before `<|startoftranscript|>`: the hotwords (as faster-whisper places
        them), the client's prompt, then the context's tail."""
        options = request.options
        if not options.prompt and not options.context and not options.hotwords:
            return []
        tokenizer = self._tokenizer("en", "transcribe")
        context = tokenizer.encode(" " + options.context.strip()) if options.context else []
        context = context[-CONTEXT_TOKENS:]
        hotwords = list(self._prompt_tokens(options.hotwords)) if options.hotwords else []
        prompt = list(self._prompt_tokens(options.prompt)) if options.prompt else []
        tokens = [*hotwords, *prompt, *context][-(MAX_PROMPT_TOKENS - 1) :]
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
        tokenizers = [
            self._tokenizer(language, request.options.task)
            for request, language in zip(requests, languages, strict=True)
        ]
        prompts, forced_counts, lead_counts = self._prompts(requests, prefixes, tokenizers)
        starts = [len(p) - forced for p, forced in zip(prompts, forced_counts, strict=True)]
        length = max_length([len(p) for p in prompts], starts, requests)
        outputs = self._whisper.model.generate(
            encoded,
            prompts,
            beam_size=beam_size,
            max_length=length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(tokenizers[0], (-1,)) or ()),
        )
        results = [
            read_output(
                output,
                tokenizers[index],
                forced_counts[index],
                lead_counts[index],
                (languages[index], language_probs[index]),
                room=token_cap(length, starts[index]) - forced_counts[index],
                usage=TokenUsage(audio=frames // 2, text=len(prompts[index])),
                seconds=None if requests[index].options.partial else own_seconds(requests[index]),
            )
            for index, output in enumerate(outputs)
        ]
        wanted = [
            i for i, request in enumerate(requests) if request.options.words and results[i].text
        ]
        if wanted:
            self._add_words(results, wanted, requests, tokenizers, encoded, features, frames)
        return results

    def _prompts(
        self, requests: list[Request], prefixes: list[list[int]], tokenizers: list[Tokenizer]
    ) -> tuple[list[list[int]], list[int], list[int]]:
        """Each request's decoder prompt (its prefix, the start of transcript, no timestamps,
        then its lead-in and committed words), how many tokens each forces, and how many of
        those are its lead-in's."""
        prompts: list[list[int]] = []
        forced_counts: list[int] = []
        lead_counts: list[int] = []
        for request, prefix, tokenizer in zip(requests, prefixes, tokenizers, strict=True):
            lead = lead_tokens(tokenizer, request.options.lead_in)
            forced = request.options.committed
            committed = tokenizer.encode(" " + forced.strip()) if forced else []
            prompts.append(
                [*prefix, *tokenizer.sot_sequence, tokenizer.no_timestamps, *lead, *committed]
            )
            forced_counts.append(len(lead) + len(committed))
            lead_counts.append(len(lead))
        return prompts, forced_counts, lead_counts

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
            leads = [lead_tokens(tokenizer, requests[i].options.lead_in) for i in indices]
            text_tokens = [
                [*lead, *tokenizer.encode(" " + results[i].text)]
                for lead, i in zip(leads, indices, strict=True)
            ]
            num_frames = [
                min(frames, len(requests[i].audio) * 100 // SAMPLE_RATE) // 2 * 2 for i in indices
            ]
            alignments = self._whisper.find_alignment(
                tokenizer, text_tokens, group_encoded, max(num_frames)
            )
            for index, words, lead in zip(indices, alignments, leads, strict=True):
                words = after_lead(words, len(lead))
                merge_punctuations(words, PREPEND_MARKS, APPEND_MARKS)
                shift = requests[index].options.lead_in_s if lead else 0.0
                limit = len(requests[index].audio) / SAMPLE_RATE - shift
                timings = tuple(
                    WordTiming(
                        word["word"].strip(),
                        round(min(max(0.0, float(word["start"]) - shift), limit), 3),
                        round(min(max(0.0, float(word["end"]) - shift), limit), 3),
                        round(float(word["probability"]), 3),
                    )
                    for word in words
                    if word["word"].strip()
                )
                results[index] = attrs.evolve(results[index], words=timings)


def _one_blas_thread() -> None:
    """numpy's BLAS on one thread for the whole process, unless the environment chose a
    number (`OPENBLAS_NUM_THREADS`; an application mounting Chorus keeps its own choice).

    The only BLAS call here is the mel filterbank. OpenBLAS starts a pool of as many threads
    as cores, which spin after each call on the cores the model workers run on: two workers
    ran much slower, in wall and CPU time, with the pool (measured: docs/benchmarks.md)."""
    if "OPENBLAS_NUM_THREADS" not in os.environ:
        threadpoolctl.threadpool_limits(limits=1, user_api="blas")


def _default_workers(device: str, threads: int) -> int:
    """Model workers when not given: on a CPU one per thread up to 2 threads, then one per 2
    (small matrices do not spread over threads, so more workers of fewer threads hold more
    live sessions; measured: docs/benchmarks.md); one on a GPU, where one wide batch beats
    several narrow."""
    if device == "cuda":
        return 1
    return threads if threads <= 2 else threads // 2
