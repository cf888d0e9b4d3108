"""What this replica tells HAProxy's `agent-check`: one line, a pure function of a snapshot.

Sans-IO: no sockets, no clock. `service/agent.py` owns the TCP port and, for each connection,
takes an `AgentSnapshot` of admission (`service.session.headroom.agent_snapshot`) and sends
`agent_reply(snapshot)`.

HAProxy 2.6 reads the reply as ASCII words separated by spaces or commas, ended by a newline:

- `down` when one of the replica's actors died (`/health` answers 503 too): HAProxy marks it
  down at once instead of after its health check's `fall` failures.
- `drain` when the replica would refuse a new live session now (no headroom, the transcriber
  is behind or its finals are slow), or is shutting down (`draining`): HAProxy sends it no new
  connection, and when every server drains it answers 503 itself (`deploy/haproxy.cfg` adds
  `Retry-After`). The live sessions already there go on.
- otherwise `up ready N%`: `ready` cancels an earlier `drain`, `up` an earlier agent `down`
  (HAProxy keeps its own health check's verdict), and `N%` sets the weight to N% of the
  configured one (`weight 100`): the share of this replica's sessions still free,
  `headroom ÷ (live + headroom)`, rounded up and never 0% while it admits (a weight of 0 is a
  drain to HAProxy). With `balance leastconn` HAProxy then sends a new session where
  connections ÷ weight is lowest: an emptier replica first.

No `maxconn:N`: HAProxy counts every connection to a server against it (HTTP requests and
uploads as well as WebSocket sessions), per balancer, and queues what is over it instead of
trying another server. The replica's own admission stays the one hard limit (its 503 is
retried on another server by `retry-on 503`); the agent only steers.
"""

from __future__ import annotations

import math

import attrs

__all__ = ["AgentSnapshot", "agent_reply"]


@attrs.frozen
class AgentSnapshot:
    """Admission as it stands: what the agent's reply is made of."""

    live: int  # live streams now
    headroom: int  # more live sessions admission would take now (the cold allowance if cold)
    refusing: bool  # admission refuses now whatever the headroom: lag, a full queue, slow finals
    draining: bool  # shutting down: new sessions are refused until the process exits
    failed: bool = False  # an actor died: nothing new can be served until a restart


def agent_reply(snapshot: AgentSnapshot) -> bytes:
    """The agent's one line for `snapshot`, newline included."""
    if snapshot.failed:
        return b"down\n"
    if snapshot.draining or snapshot.refusing or snapshot.headroom <= 0:
        return b"drain\n"
    free = snapshot.headroom / (snapshot.live + snapshot.headroom)
    percent = min(100, max(1, math.ceil(100 * free)))
    return f"up ready {percent}%\n".encode("ascii")
