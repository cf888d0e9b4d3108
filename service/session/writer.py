"""The writer stage: frames in, the client's messages out (`service/session/supervisor.py`).

`write_frames` is the last task of the session's nursery and owns the frame channel's receive
end. It stores each final before sending it (`SessionHooks.final`), encoded first so the store
keeps the `seq` it goes out with (a final replayed on a resumed connection carries its `seq`
already and is stored already: it is only sent), drops partials a final has overtaken, and
once every frame sender has closed, closes the socket with the session's close code. A
client that vanishes, or stops reading for `send_timeout_s`, is not waited on again: the
writer goes on draining frames (so finals still reach the store) and sends nothing more.
"""

from __future__ import annotations

import trio

from protocol.native import Final, Partial
from service.session.messages import ServerFrame
from service.session.ports import ClientGone
from service.session.record import Session


async def write_frames(session: Session, frames: trio.MemoryReceiveChannel[ServerFrame]) -> None:
    """Encode and send every frame; store finals first; drop partials a final has overtaken.

    A client that stops reading (a send blocked for `send_timeout_s`) is treated as gone: the
    reader stops, the pipeline drains into the store, and nothing waits on that client again.
    """
    socket, ending = session.socket, session.ending
    last_final = -1
    with frames:
        async for frame in frames:
            if isinstance(frame, Partial) and frame.utterance <= last_final:
                continue
            messages: list[str | bytes] = []
            if isinstance(frame, Final):
                last_final = max(last_final, frame.utterance)
                replayed = frame.seq != 0
                messages = session.codec.encode(frame)  # stamps the `seq` that is stored
                notice = None if replayed else await session.hooks.final(frame)
                messages += session.codec.encode(notice) if notice is not None else []
            if ending.client_gone:
                continue
            if not isinstance(frame, Final):
                messages = session.codec.encode(frame)
            try:
                with trio.move_on_after(session.limits.send_timeout_s) as sending:
                    for message in messages:
                        await socket.send(message)
            except ClientGone:
                ending.left()
            if sending.cancelled_caught:
                ending.left()
                ending.stop("slow_reader")
        if not ending.client_gone:
            try:
                await socket.close(ending.close_code)
            except ClientGone:
                ending.left()
