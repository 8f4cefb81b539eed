"""API keys and per-session tokens.

An API key (from config, compared in constant time) creates sessions. Each session
gets a token `<session_id>.<expiry>.<mac>` where mac = HMAC-SHA256(secret, session_id
| expiry): it names exactly one session, cannot be forged or re-targeted without the
server secret, and stops working at its expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable


class AuthError(Exception):
    """An authentication or authorisation failure; `code` goes into the `error` event."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def key_id(api_key: str) -> str:
    """A stable, non-secret name for an API key (quotas and logs never hold the key itself)."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


class ApiKeys:
    """The configured API keys."""

    def __init__(self, keys: list[str]) -> None:
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys if k]

    def check(self, api_key: str | None) -> str:
        """The key's id, or AuthError('bad_api_key')."""
        if api_key:
            digest = hashlib.sha256(api_key.encode()).digest()
            # compare against every key, so timing does not tell which prefix matched
            if sum(hmac.compare_digest(digest, d) for d in self._digests):
                return key_id(api_key)
        raise AuthError("bad_api_key", "missing or unknown API key")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenSigner:
    """Issues and verifies session tokens."""

    def __init__(self, secret: bytes, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 16:
            raise ValueError(f"token secret must be at least 16 bytes, got {len(secret)}")
        self._secret = secret
        self.ttl_s = ttl_s
        self._clock = clock

    def _mac(self, session_id: str, expiry: int) -> str:
        return _b64(hmac.new(self._secret, f"{session_id}|{expiry}".encode(), hashlib.sha256).digest())

    def issue(self, session_id: str) -> tuple[str, float]:
        """(token, expiry as Unix time) for `session_id`."""
        if "." in session_id:
            raise ValueError(f"session id {session_id!r} must not contain '.'")
        expiry = int(self._clock() + self.ttl_s)
        return f"{session_id}.{expiry}.{self._mac(session_id, expiry)}", float(expiry)

    def verify(self, token: str | None, session_id: str | None = None) -> str:
        """The session id the token grants, or AuthError (invalid_token, token_expired, forbidden)."""
        parts = (token or "").split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            raise AuthError("invalid_token", "missing or malformed session token")
        sid, expiry_text, mac = parts
        expiry = int(expiry_text)
        if not hmac.compare_digest(mac, self._mac(sid, expiry)):
            raise AuthError("invalid_token", "session token signature does not match")
        if self._clock() >= expiry:
            raise AuthError("token_expired", f"session token expired at {expiry}")
        if session_id is not None and sid != session_id:
            raise AuthError("forbidden", "this token belongs to another session")
        return sid
