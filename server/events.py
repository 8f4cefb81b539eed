"""A session's own events (not replies to one client message), fanned out to whoever listens.

Turn detection (`input_audio.*`) and the answers to spoken questions belong to the session,
not to one WebSocket: every socket attached to it, every SSE stream opened for it
(`GET /v1/sessions/{id}/events`) and, on a worker, the gateway relay each get a bounded queue.
A listener that falls behind loses its oldest events (counted), never the session's others.
"""

from __future__ import annotations

import asyncio
import logging

from .errors import ServiceError
from .protocol import ServerEvent

log = logging.getLogger(__name__)

#: Events one listener may hold before its oldest are dropped.
LISTENER_QUEUE = 256
#: Listeners one session may have (sockets + SSE streams + relays).
MAX_LISTENERS = 16


class EventFeed:
    """Fan-out of one session's events to bounded listener queues (event-loop only)."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self._listeners: set[asyncio.Queue[ServerEvent | None]] = set()
        self.closed = False
        self.dropped = 0
        self.published = 0

    def subscribe(self, maxsize: int = LISTENER_QUEUE) -> asyncio.Queue[ServerEvent | None]:
        """A new listener queue; None in it means the session ended (ServiceError
        `too_many_listeners` past MAX_LISTENERS)."""
        if len(self._listeners) >= MAX_LISTENERS:
            raise ServiceError(
                "too_many_listeners", f"this session already has {MAX_LISTENERS} event listeners"
            )
        queue: asyncio.Queue[ServerEvent | None] = asyncio.Queue(maxsize)
        if self.closed:
            queue.put_nowait(None)
        self._listeners.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[ServerEvent | None]) -> None:
        self._listeners.discard(queue)

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def publish(self, event: ServerEvent | None) -> None:
        """Give `event` to every listener (a full queue drops its oldest event first)."""
        self.published += 1
        for queue in self._listeners:
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
                log.info("%s: a slow event listener lost an event", self.session_id)
            queue.put_nowait(event)

    def close(self) -> None:
        """The session ended: every listener gets None after its pending events."""
        if not self.closed:
            self.closed = True
            self.publish(None)
