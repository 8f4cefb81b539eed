"""Graceful shutdown that cannot hang: every step gets a deadline.

A step that misses it (a peer connection whose close never completes, a store call on a
connection that stopped answering) is cancelled, logged with what it was, and left behind;
the steps after it still run, so one stuck session or socket never keeps a server from
stopping. A step that fails raises as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

log = logging.getLogger(__name__)

#: Seconds each shutdown step may take (a session's close, the listener, the store).
STEP_S = 10.0


async def within(aw: Awaitable[object], what: str, seconds: float | None = None) -> bool:
    """Await `aw` for at most `seconds` (default STEP_S); False (logged) when it did not finish.

    The step is cancelled but not awaited after its deadline: a step that ignores cancellation
    cannot hold the caller either.
    """
    limit = STEP_S if seconds is None else seconds
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait({task}, timeout=limit)
    if done:
        task.result()  # a step that failed raises here
        return True
    task.cancel()
    log.warning("shutdown: %s did not finish within %g s; left behind", what, limit)
    return False
