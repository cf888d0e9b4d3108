"""What Deepgram's dialects share about vocabulary: key terms from the query, `Configure`'s
failures.

Sans-IO. Deepgram's v1 (`protocol/dialects/deepgram.py`) and Flux (`protocol/dialects/flux.py`)
take key terms as repeated `keyterm` query parameters (v1 also `keywords`, `term:boost`; the
boost is dropped: Whisper takes no weights) and change them mid-stream with a `Configure`
message. Each `Configure` is answered exactly once: `ConfigureSuccess` when the session's
`configured` frame comes back, `ConfigureFailure` for a malformed one (`invalid_configure`,
raised here at decoding) or one the session refuses (`invalid_vocabulary`, too many or too
long terms: `service/session/vocabulary.py`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TypeVar

import msgspec

from protocol.codec import ProtocolError

# the native error codes a `Configure` can end in, as Deepgram's `ConfigureFailure` codes
CONFIGURE_FAILURES = {
    "invalid_vocabulary": "CONFIGURE_KEYTERM_LIMIT_EXCEEDED",
    "invalid_configure": "CONFIGURE_INVALID",
}
_BOOST = re.compile(r":[-+]?\d+(\.\d+)?$")

M = TypeVar("M")


class _Tagged(msgspec.Struct):
    type: str | None = None


_tag_decoder = msgspec.json.Decoder(_Tagged)


def configure_failure_on(parse: Callable[[str], M], message: str) -> M:
    """`parse(message)`; a `Configure` it cannot accept fails as `invalid_configure` (answered
    with `ConfigureFailure`), anything else with the parser's own error."""
    try:
        return parse(message)
    except ProtocolError as error:
        if _tag(message) == "Configure":
            raise ProtocolError("invalid_configure", error.message) from None
        raise


def query_keyterms(keyterm: Sequence[str], keywords: Sequence[str] = ()) -> list[str] | None:
    """The key terms of the `keyterm` and `keywords` query parameters (None: none given)."""
    terms = [*keyterm, *(_BOOST.sub("", word) for word in keywords)]
    return [term for term in terms if term.strip()] or None


def _tag(message: str) -> str | None:
    try:
        return _tag_decoder.decode(message).type
    except msgspec.DecodeError:
        return None
