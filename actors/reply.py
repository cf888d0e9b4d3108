"""What the actors share: the reply slot one caller waits on, and their statistics' mirror.

A caller puts a request (carrying a `Reply`) into an actor's bounded channel and waits on the
reply; the actor answers it exactly once, on the trio thread, with `set(result)` or
`fail(error)`. A caller that is cancelled while it waits leaves the reply unanswered, which is
how an actor knows to drop its request (`done` is still False when the caller gives up).

`snapshot` builds an actor's `statistics()` record from the mutable counters it keeps.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import attrs
import trio

T = TypeVar("T")
S = TypeVar("S", bound=attrs.AttrsInstance)

_NOTHING: Any = object()


class Reply(Generic[T]):
    """One answer, given once by an actor to the one task that waits for it."""

    __slots__ = ("_answered", "_error", "_result")

    def __init__(self) -> None:
        self._answered = trio.Event()
        self._result: T = _NOTHING
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        """Whether the actor has answered."""
        return self._answered.is_set()

    def set(self, result: T) -> None:
        self._result = result
        self._answered.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._answered.set()

    async def wait(self) -> T:
        """The result, or the actor's error raised here; waits until the actor answers."""
        await self._answered.wait()
        if self._error is not None:
            raise self._error
        return self._result


def snapshot(kind: type[S], counters: object, **computed: Any) -> S:
    """A `kind` record from the same-named fields of `counters` (floats rounded to 3 places:
    milliseconds of busy time), except those given in `computed`."""
    values = dict(computed)
    for field in attrs.fields(kind):
        if field.name not in values and hasattr(counters, field.name):
            value = getattr(counters, field.name)
            values[field.name] = round(value, 3) if isinstance(value, float) else value
    return kind(**values)
