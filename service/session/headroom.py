"""How much room this replica has for new live sessions, as the HAProxy agent reports it.

`agent_snapshot` reads admission's state the way `admit` would judge a new session now (the
session gate's free slots, the capacity meter's headroom or cold allowance, the lag, queue and
final-wait rules, the drain), without taking a slot or a rate-limit token. It brings the
capacity meter up to date as `/health` does; it owns no task and keeps no state.
"""

from __future__ import annotations

import trio

from service.policy.agent import AgentSnapshot
from service.session.admission import SessionServices, finals_slow, observe, overloaded


def agent_snapshot(services: SessionServices, *, failed: bool = False) -> AgentSnapshot:
    """Admission now, for `service.policy.agent.agent_reply`; `failed`: an actor died."""
    now = trio.current_time()
    live = observe(services.capacity, services.transcriber, services.live, now)
    gate = services.gate
    room = gate.max_sessions - gate.sessions
    if services.settings.admission_utilization > 0:
        allowance = services.capacity.allowance(live)
        if allowance is not None:
            room = min(room, allowance)
    return AgentSnapshot(
        live=live,
        headroom=max(0, room),
        refusing=overloaded(services) or finals_slow(services, now),
        draining=services.live.draining,
        failed=failed,
    )
