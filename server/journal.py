"""This process's own copy of the history it wrote, to repair the store after an outage.

Every answered question is journalled here before it is written to the store. A write
that fails (Redis down) marks the journal dirty; `reconcile` later appends whatever the
store lacks — after a failed write, or after Redis restarted and lost its data — so no
entry a client was told about is lost while this process lives.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from .store import HistoryRecord, Store


class HistoryJournal:
    """The last `maxlen` records of the last `max_sessions` sessions this process answered for."""

    def __init__(self, maxlen: int, max_sessions: int = 256) -> None:
        self.maxlen = maxlen
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, deque[HistoryRecord]] = OrderedDict()
        self.dirty = False
        self.repaired = 0

    def record(self, session_id: str, record: HistoryRecord) -> None:
        items = self._sessions.pop(session_id, None) or deque(maxlen=self.maxlen)
        items.append(record)
        self._sessions[session_id] = items  # most recent last
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)

    async def write(self, store: Store, session_id: str, record: HistoryRecord) -> bool:
        """Journal a record and write it to the store; False (and dirty) when the store failed."""
        self.record(session_id, record)
        try:
            await store.append_history(session_id, record, self.maxlen)
        except Exception:
            self.dirty = True
            return False
        return True

    async def reconcile(self, store: Store) -> int:
        """Append to the store every journalled record it lacks; the number appended.

        Raises what the store raises (the journal stays dirty then).
        """
        self.dirty = True
        appended = 0
        for session_id, items in list(self._sessions.items()):
            present = {r.response_id for r in await store.history(session_id, self.maxlen)}
            for record in list(items):
                if record.response_id not in present:
                    await store.append_history(session_id, record, self.maxlen)
                    appended += 1
        self.dirty = False
        self.repaired += appended
        return appended
