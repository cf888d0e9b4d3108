"""Resuming a native session on a new connection (issue 23): the token, what is replayed, and
where the audio clock continues.

The route (`service/routes/stream.py`) reads `resume` and `after_seq` from the query
(`ResumeRequest.from_query`: a malformed one is refused with 400 before anything else) and
hands `open_resume` to `serve_session`, which calls it once the session is admitted, before
the upgrade: it issues the connection's new token and, for a resume, swaps the old one for it
in the store (`LeaseKeeper.claim`; a refusal is one 403 whatever was wrong). What comes out is
`Resume`, a frozen value the session's stages read and never change:

- the writer sends `replay` (the stored finals after `after_seq`, with their first `seq`) after
  `ready`; the codec goes on after `last_seq`;
- the segmenter's clock starts at `audio_start` (the end of the last stored final), its
  utterances at `next_utterance`, and it drops the first `resend_s` of audio: the client
  re-sends from the end of the last final it saw, and the server has that audio up to
  `audio_start` already (`drop_resent`);
- the transcriber client starts from the stored finals' text (the model's context, and the
  whole session's `stopped`);
- the store hooks bind the token (a new session), skip the row and the recording (a resumed
  one) and, when the client vanishes, release the session instead of ending it (`RELEASED`).

Memory: `replay` holds the finals the client missed and `transcript` the stored finals' text,
at most the session's transcript (bounded by `max_session_s`); the frames channel stays bounded.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence

import attrs
import trio

from actors.model.port import SAMPLE_RATE, Samples
from actors.store.keeper import LeaseKeeper
from actors.store.leases import Busy, Claimed, hash_token
from actors.store.schema import StoredUtterance
from protocol.native import Final, Word
from service.policy.refusal import Refusal

RELEASED = "released"  # the reason `hooks.ended` gets for a session its client may resume
TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
MAX_SEQ = 2**31 - 1
BUSY_WAIT_S = 10.0  # how long a resume waits for the old connection to store its finals
BUSY_POLL_S = 0.1


def refused() -> Refusal:
    """The one answer to every token that does not resume: no hint of why."""
    return Refusal(403, "resume_refused", "resume token not valid")


@attrs.frozen
class ResumeRequest:
    token: str = attrs.field(repr=False)  # a secret: never in a log
    after_seq: int

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> ResumeRequest | None:
        """The query's `resume` and `after_seq`; None without `resume`; `Refusal` (400) when
        either is malformed."""
        token, after = query.get("resume"), query.get("after_seq", "0")
        if token is None:
            if "after_seq" in query:
                raise Refusal(400, "invalid_resume", "`after_seq` needs `resume`")
            return None
        if not TOKEN.match(token):
            raise Refusal(400, "invalid_resume", "`resume` is not a resume token")
        if not after.isascii() or not after.isdigit() or int(after) > MAX_SEQ:
            raise Refusal(400, "invalid_resume", "`after_seq` must be a whole number")
        return cls(token, int(after))


@attrs.frozen
class Resume:
    """What a connection of a resumable session starts from (the default: resume off)."""

    # what this connection's `ready` carries (a secret: never in a log); None: no resume
    token: str | None = attrs.field(default=None, repr=False)
    session_id: str | None = None  # the session resumed; None: a new one
    resumed: bool = False
    replay: tuple[Final, ...] = ()  # finals the client missed, with their `seq`
    last_seq: int = 0  # the codec goes on after it
    next_utterance: int = 0
    audio_start: float = 0.0  # where the session's audio clock continues
    resend_s: float = 0.0  # how much of the audio that comes first the server has already
    transcript: tuple[str, ...] = ()  # the stored finals' text: context, and `stopped`'s
    speech_s: float = 0.0  # of the audio before `audio_start`, what the stored finals cover


def resumed_from(
    token: str,
    session_id: str,
    finals: Sequence[tuple[int | None, StoredUtterance]],
    after_seq: int,
) -> Resume:
    """A resumed connection's start: replay the finals after `after_seq`; the clock goes on at
    the end of the last final; the client re-sends from the end of the last final it saw. A
    final stored without `seq` counts as seen (it was never sent with one)."""
    seen_end = max((u.end for seq, u in finals if seq is None or seq <= after_seq), default=0.0)
    audio_start = max((u.end for _, u in finals), default=0.0)
    return Resume(
        token=token,
        session_id=session_id,
        resumed=True,
        replay=tuple(as_final(seq, u) for seq, u in finals if seq is not None and seq > after_seq),
        last_seq=max([after_seq, *(seq for seq, _ in finals if seq is not None)]),
        next_utterance=max((u.index + 1 for _, u in finals), default=0),
        audio_start=audio_start,
        resend_s=max(0.0, audio_start - seen_end),
        transcript=tuple(text for _, u in finals if (text := u.text)),
        speech_s=sum(u.end - u.start for _, u in finals),
    )


def as_final(seq: int, utterance: StoredUtterance) -> Final:
    """A stored final as it was sent (what the store keeps of it: no flags or sentiment)."""
    words = None
    if utterance.words is not None:
        words = [Word(word=w.word, start=w.start, end=w.end, confidence=w.confidence)
                 for w in utterance.words]  # fmt: skip
    return Final(
        seq=seq,
        utterance=utterance.index,
        text=utterance.text,
        start=utterance.start,
        end=utterance.end,
        language=utterance.language,
        confidence=utterance.confidence,
        words=words,
    )


async def open_resume(leases: LeaseKeeper, client: str, request: ResumeRequest | None) -> Resume:
    """The new connection's `Resume`: a new token (resume on), and for a resume the claimed
    session's finals. Raises `refused()`. A session whose old connection is still storing its
    finals is waited for (at most `BUSY_WAIT_S`)."""
    if not leases.enabled:
        if request is not None:
            raise refused()
        return Resume()
    token = secrets.token_urlsafe(32)
    if request is None:
        return Resume(token=token)
    claimed: Claimed | Busy | None = None
    with trio.move_on_after(BUSY_WAIT_S):
        while True:
            with trio.CancelScope(shield=True):  # a claim that commits is used, or released
                claimed = await leases.claim(hash_token(request.token), client, hash_token(token))
            if not isinstance(claimed, Busy):
                break
            await trio.sleep(BUSY_POLL_S)
    if not isinstance(claimed, Claimed):
        raise refused()
    return resumed_from(token, claimed.session_id, claimed.finals, request.after_seq)


def drop_resent(samples: Samples, resend: int) -> tuple[Samples, int]:
    """Drop the first `resend` samples the server has already; what is left of each."""
    dropped = min(resend, len(samples))
    return samples[dropped:], resend - dropped


def samples_of(seconds: float) -> int:
    return round(seconds * SAMPLE_RATE)
