"""Admission and the common life of a WebSocket session, for every route and dialect.

`serve_session` is what each WebSocket route calls: before the upgrade it checks the per-client
and total session caps, whether the transcriber is keeping up, and last the client's recording
rate limit, so that a session refused for any other reason spends no rate-limit token (issue
11, M5); refusals are HTTP 429/503 + `Retry-After`, never after audio was accepted. Once the
server drains for shutdown (`LiveSessions.drain`), everything new is refused (503
`server_draining`), resumes included. Then it accepts, builds the session's store hooks, and
runs the session pipeline. It owns the session's admission slot and releases it when the
session ends, however it ends. A route that resumes sessions (the native one) hands over
`open_resume`, called once the session is admitted and before the upgrade, so a resume the
server is too full for keeps its token, and a claimed one is run (`service/session/resume.py`);
a resume spends no rate-limit token (`counted`).
What it uses of the running server comes in one record, `SessionServices` (the route hands
down `Runtime.sessions`, `service/runtime.py`); nothing here reaches for the app.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import attrs
import trio
from starlette.websockets import WebSocket

from actors.limiter import LimiterHandle
from actors.speech.vad_actor import VadHandle
from actors.store.actor import StoreClosed, StoreError, StoreHandle
from actors.transcriber.actor import TranscriberHandle
from protocol.codec import Codec
from protocol.native import Config, Error, Final
from service.config import Settings
from service.policy.caller import Caller
from service.policy.capacity import CapacityMeter, CapacityStatistics, Counters
from service.policy.latency import FinalWaits
from service.policy.limits import Admission, Releasable, SessionGate
from service.policy.refusal import Refusal
from service.policy.security import refuse_websocket
from service.session.config import check_config
from service.session.feeds import Feeds
from service.session.handle import SessionHandle
from service.session.ports import StreamOptions
from service.session.record import Session, new_session_id
from service.session.recorder import StoreHooks
from service.session.resume import Resume
from service.session.sockets import StarletteSocket
from service.session.state import SessionStatistics
from service.session.supervisor import run_session

STORE_RETRY_S = 2  # `Retry-After` of a resume the store could not answer
log = logging.getLogger("chorus.session")


class LiveSessions(dict[str, SessionHandle]):
    """The sessions running now, by id, as handles; `wait_empty` wakes when the last one ends.

    A session is added when it starts and removed when it has ended, however it ends (its
    route does both); a handle's `stop` ends it, and it leaves on its own. `drain()` (the
    shutdown, `service.app.drain_sessions`) closes the door for good: admission refuses new
    sessions and uploads, and the HAProxy agent answers `drain`."""

    def __init__(self) -> None:
        super().__init__()
        self._empty = trio.Event()
        self._empty.set()
        self.draining = False

    def drain(self) -> None:
        self.draining = True

    def add(self, session: SessionHandle) -> None:
        if not self:
            self._empty = trio.Event()
        self[session.session_id] = session

    def remove(self, session_id: str) -> None:
        self.pop(session_id, None)
        if not self:
            self._empty.set()

    async def wait_empty(self) -> None:
        await self._empty.wait()

    @contextmanager
    def holding(self, session: SessionHandle) -> Iterator[None]:
        """`session` is live for the block, however the block ends (a resumed session's new
        connection may hold its id by then: that one stays)."""
        self.add(session)
        try:
            yield
        finally:
            if self.get(session.session_id) is session:
                self.remove(session.session_id)

    def streams(self) -> list[SessionHandle]:
        """The live streams: what admission prices (not `/ws` recordings connections)."""
        return [session for session in self.values() if session.streaming]


@attrs.frozen
class SessionServices:
    """What admitting and running a session use of the running server: the pieces of the app's
    `service.runtime.Runtime` (`runtime.sessions`), handed down by the route."""

    settings: Settings  # the admission thresholds, and the transcriber's queue size
    options: StreamOptions
    transcriber: TranscriberHandle
    vad: VadHandle | None  # None: each session runs its own VAD inline
    store: StoreHandle
    limiter: LimiterHandle
    gate: SessionGate
    capacity: CapacityMeter
    live: LiveSessions
    final_waits: FinalWaits  # every session's finals' waits, for the latency guard
    # who follows which live session (`GET /v1/sessions/{id}/events`)
    feeds: Feeds = attrs.field(factory=Feeds, kw_only=True)


async def admit(
    services: SessionServices, client: str, *, live_session: bool = True, counted: bool = True
) -> Refusal | None:
    """Why a new session or upload from `client` must be refused now, or None.

    A live session must also fit the transcriber's measured capacity (`service/policy/capacity.py`):
    refused up front, before it or anyone else falls behind; and it is refused the same way
    while recent finals are slow (`finals_slow`), which the capacity plan may not foresee.
    Uploads run behind live work and are not counted there. The rate limit comes last, because
    an allowed `hit` spends one of the client's tokens: a caller must check its own caps before
    calling this. A resumed session (`counted` False) is not a new recording: it spends none.
    """
    if (refusal := draining(services)) is not None:
        return refusal
    if overloaded(services):
        return Refusal(
            503, "overloaded", "the transcriber is not keeping up; try again soon", retry_after=5
        )
    if live_session and not fits(services):
        return Refusal(
            503,
            "at_capacity",
            "the server holds as many live sessions as it can serve on time; try again soon",
            retry_after=10,
        )
    if live_session and finals_slow(services, trio.current_time()):
        return Refusal(
            503,
            "at_capacity",
            "finals are taking longer than the server promises; try again soon",
            retry_after=10,
        )
    if not counted:
        return None
    decision = await services.limiter.hit(client)
    if not decision.allowed:
        code = "rate_limited" if decision.reason == "limit" else "limits_unavailable"
        window = f" per {decision.window}" if decision.window else ""
        return Refusal(
            decision.status_code,
            code,
            f"too many recordings{window} for this client",
            retry_after=max(1, decision.retry_after),
        )
    return None


def draining(services: SessionServices) -> Refusal | None:
    """503 `server_draining` once the server drains for shutdown (`LiveSessions.drain`)."""
    if not services.live.draining:
        return None
    return Refusal(
        503,
        "server_draining",
        "this server is shutting down; try again (another replica takes the session)",
        retry_after=2,
    )


async def admit_session(
    services: SessionServices, client: str, *, counted: bool = True
) -> Admission:
    """A live session slot for `client`, or `Refusal`: the session caps first, then `admit`,
    so a session the caps refuse spends no rate-limit token. The slot is given back if `admit`
    refuses or is cancelled."""
    admission = services.gate.admit(client)
    admitted = False
    try:
        refusal = await admit(services, client, counted=counted)
        if refusal is not None:
            raise refusal
        admitted = True
        return admission
    finally:
        if not admitted:
            admission.release()


def capacity_statistics(
    meter: CapacityMeter,
    transcriber: TranscriberHandle,
    live: LiveSessions,
    final_waits: FinalWaits,
) -> CapacityStatistics:
    """Bring the capacity meter up to date and read it, with the recent finals' p95 wait."""
    now = trio.current_time()
    live_streams = observe(meter, transcriber, live, now)
    wait = final_waits.percentile(now)
    return attrs.evolve(
        meter.statistics(live_streams),
        final_wait_p95_s=None if wait is None else round(wait, 3),
        final_waits=len(final_waits.waits(now)),
    )


def observe(
    meter: CapacityMeter, transcriber: TranscriberHandle, live: LiveSessions, now: float
) -> int:
    """Bring the capacity meter up to date; how many live streams there are."""
    counters = Counters.of(transcriber.statistics())
    statistics = [session.statistics() for session in live.streams()]
    sessions = [(session.speech_s, session.received_s) for session in statistics]
    meter.observe(now, counters, sessions)
    return len(statistics)


def fits(services: SessionServices) -> bool:
    """Does one more live session fit the measured capacity (`service/policy/capacity.py`)?"""
    if services.settings.admission_utilization <= 0:
        return True
    live = observe(services.capacity, services.transcriber, services.live, trio.current_time())
    return services.capacity.admits(live)


def finals_slow(services: SessionServices, now: float) -> bool:
    """Are finals slower than `admission_final_wait_s` now (the p95 of every session's waits
    in `FinalWaits`' window)? Only while a live stream runs: with none, what the window saw
    was someone else's load, and one session is always let in."""
    limit = services.settings.admission_final_wait_s
    if limit <= 0 or not services.live.streams():
        return False
    wait = services.final_waits.percentile(now)
    return wait is not None and wait > limit


def overloaded(services: SessionServices) -> bool:
    """The transcriber cannot keep up: a live session is far behind, or the queue is full."""
    settings = services.settings
    live = services.live.streams()
    if any(session.statistics().lag_s > settings.admission_lag_s for session in live):
        return True
    return services.transcriber.statistics().queue >= settings.queue_size * 3 // 4


async def serve_session(
    websocket: WebSocket,
    services: SessionServices,
    codec: Codec,
    config: Config | Error,
    *,
    route: str,
    annotate: Callable[[Final], Final] = lambda frame: frame,
    options: StreamOptions | None = None,
    subprotocol: str | None = None,
    refuse: Callable[[Error], Awaitable[None]] | None = None,
    open_resume: Callable[[str], Awaitable[Resume]] | None = None,
    counted: bool = True,
) -> SessionStatistics | None:
    """Check the config, admit, accept and run one session.

    `config` is checked here, once (`check_config`), and may already be an `Error`. A bad one
    is answered after the upgrade with an `error` and 1008, or, when the dialect refuses before
    the upgrade (Deepgram's HTTP 400), by `refuse`, before admission.
    """
    client = Caller.of(websocket).client
    options = options or services.options
    problem = config if isinstance(config, Error) else check_config(config, options)
    if problem is not None and refuse is not None:
        await refuse(problem)
        return None
    try:
        admission = await admit_session(services, client, counted=counted)
    except Refusal as refusal:
        await turn_away(websocket, route, client, refusal)
        return None
    try:
        resume = Resume() if open_resume is None else await _opened(open_resume, client)
    except Refusal as refusal:
        admission.release()
        await turn_away(websocket, route, client, refusal)
        return None
    except BaseException:  # cancelled: the slot goes back all the same
        admission.release()
        raise
    running = False
    try:
        async with admitted(websocket, admission) as socket:
            await websocket.accept(subprotocol=_subprotocol(websocket, subprotocol))
            if problem is not None or not isinstance(config, Config):
                await _refuse_config(socket, codec, problem)
                return None
            running = True
            return await _run(
                services, socket, codec, config, options, route, client, annotate, resume
            )
    finally:
        if resume.session_id is not None and not running:
            # claimed but never run (a bad config, a failed upgrade): resumable again, with
            # the token it was claimed with too (`leases.claim`)
            with trio.CancelScope(shield=True), contextlib.suppress(StoreClosed, StoreError):
                await services.store.leases.release(resume.session_id, resume.audio_start)


async def _opened(open_resume: Callable[[str], Awaitable[Resume]], client: str) -> Resume:
    """`open_resume`; a store that cannot answer is a 503 `store_error` to retry shortly."""
    try:
        return await open_resume(client)
    except (StoreError, StoreClosed) as error:
        log.error("resume for %s: the store failed: %s", client, error)
        raise Refusal(
            503, "store_error", "the server cannot resume sessions now", retry_after=STORE_RETRY_S
        ) from None


async def _refuse_config(socket: StarletteSocket, codec: Codec, problem: Error | None) -> None:
    """Answer a config that cannot run with a fatal `error` and close 1008."""
    problem = problem or Error(code="invalid_config", message="bad configuration")
    problem.fatal = True
    for message in codec.encode(problem):
        await socket.send(message)
    await socket.close(1008, problem.code)


async def turn_away(websocket: WebSocket, route: str, client: str, refusal: Refusal) -> None:
    """Refuse a connection before the upgrade (HTTP status + `Retry-After`), and log why."""
    log.info("refused %s for %s: %s", route, client, refusal.code)
    await refuse_websocket(websocket, refusal)


@asynccontextmanager
async def admitted(websocket: WebSocket, admission: Releasable) -> AsyncIterator[StarletteSocket]:
    """The life every admitted WebSocket connection shares (sessions and `/ws` recordings):
    the connection as a `StarletteSocket`; when it ends, however it ends, its admission slot
    is given back and what the client still sends is drained (`StarletteSocket.drain`)."""
    socket = StarletteSocket(websocket)
    try:
        yield socket
    finally:
        admission.release()
        with trio.CancelScope(shield=True):
            await socket.drain()


async def _run(
    services: SessionServices,
    socket: StarletteSocket,
    codec: Codec,
    config: Config,
    options: StreamOptions,
    route: str,
    client: str,
    annotate: Callable[[Final], Final],
    resume: Resume,
) -> SessionStatistics | None:
    session = Session(
        session_id=resume.session_id or new_session_id(),
        resume=resume,
        socket=socket,
        codec=codec,
        transcriber=services.transcriber,
        config=config,
        options=options,
        route=route,
        client=client,
        hooks=services.feeds.hooks(StoreHooks(services.store, record=config.record, resume=resume)),
        annotate=annotate,
        vad=services.vad,
        final_waits=services.final_waits,
    )
    with services.live.holding(SessionHandle.of(session)):
        try:
            return await run_session(session)
        except Exception:
            log.exception("session %s failed", session.session_id)
            await socket.close(1011, "internal error")
            return None


def _subprotocol(websocket: WebSocket, wanted: str | None) -> str | None:
    offered = websocket.scope.get("subprotocols") or []
    if wanted is not None and wanted in offered:
        return wanted
    return "token" if "token" in offered else None
