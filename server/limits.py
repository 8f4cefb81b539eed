"""Per-connection and per-address limits that keep one hostile client from starving the rest.

`TokenBucket` meters a connection's messages before they are parsed; `SocketLimits` caps
the WebSockets one client address may hold and the sockets (all addresses together) that
hold no session yet. docs/security.md says what each protects.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens per second up to `burst`; `take` spends one if there is one."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst ≥ 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class SocketLimits:
    """Open WebSockets per client address, and those not yet holding a session."""

    def __init__(self, per_address: int, unauthenticated: int) -> None:
        self.per_address = per_address
        self.max_unauthenticated = unauthenticated
        self.by_address: Counter[str] = Counter()
        self.unauthenticated = 0

    def refusal(self, address: str) -> str | None:
        """Why a new socket from `address` is refused, or None (then `opened` must follow)."""
        if self.by_address[address] >= self.per_address:
            return f"{self.by_address[address]} open connections from this address (limit {self.per_address})"
        if self.unauthenticated >= self.max_unauthenticated:
            return (
                f"{self.unauthenticated} connections hold no session yet (limit {self.max_unauthenticated});"
                " try again later"
            )
        return None

    def opened(self, address: str) -> None:
        self.by_address[address] += 1
        self.unauthenticated += 1

    def authenticated(self) -> None:
        """A socket of this process now holds a session (called once per socket)."""
        self.unauthenticated -= 1

    def closed(self, address: str, authenticated: bool) -> None:
        self.by_address[address] -= 1
        if self.by_address[address] <= 0:
            del self.by_address[address]
        if not authenticated:
            self.unauthenticated -= 1
