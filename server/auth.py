"""API keys and per-session tokens.

An API key (from config, compared in constant time) creates sessions. Each session
gets a token `<session_id>.<key_id>.<expiry>.<mac>` where mac = HMAC-SHA256(secret,
session_id | key_id | expiry): it names exactly one session and the API key it was minted
under, cannot be forged or re-targeted without the server secret, stops working at its
expiry, and stops working when its key is removed from the config.

Parsing is strict and bounded: at most `MAX_TOKEN_CHARS` ASCII characters, the expiry in
ASCII digits only (at most 12), so no token form can cost more than one HMAC or raise
anything but `AuthError`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable


class AuthError(Exception):
    """An authentication or authorisation failure; `code` goes into the `error` event."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


#: The longest token accepted (a real one is about 80 characters).
MAX_TOKEN_CHARS = 256
_NAME = re.compile(r"[0-9A-Za-z_-]{1,64}")
_TOKEN = re.compile(r"([0-9A-Za-z_-]{1,64})\.([0-9A-Za-z_-]{1,64})\.([0-9]{1,12})\.([0-9A-Za-z_-]{43})")


def looks_like_token(credential: str | None) -> bool:
    """Whether a bearer credential has a session token's shape (rather than an API key's)."""
    return bool(credential) and credential.count(".") == 3  # type: ignore[union-attr]


def key_id(api_key: str) -> str:
    """A stable, non-secret name for an API key (quotas and logs never hold the key itself)."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


class ApiKeys:
    """The configured API keys."""

    def __init__(self, keys: list[str]) -> None:
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys if k]
        self.ids = frozenset(key_id(k) for k in keys if k)

    def known(self, kid: str) -> bool:
        """Whether `kid` names a configured key (tokens minted under a removed key stop working)."""
        return kid in self.ids

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
    """Issues and verifies session tokens bound to the API key that created the session."""

    def __init__(
        self,
        secret: bytes,
        ttl_s: float,
        clock: Callable[[], float] = time.time,
        key_known: Callable[[str], bool] | None = None,
    ) -> None:
        if len(secret) < 16:
            raise ValueError(f"token secret must be at least 16 bytes, got {len(secret)}")
        self._secret = secret
        self.ttl_s = ttl_s
        self._clock = clock
        self._key_known = key_known

    def _mac(self, session_id: str, kid: str, expiry: int) -> str:
        message = f"{session_id}|{kid}|{expiry}".encode()
        return _b64(hmac.new(self._secret, message, hashlib.sha256).digest())

    def issue(self, session_id: str, kid: str, not_after: float | None = None) -> tuple[str, float]:
        """(token, expiry as Unix time) for `session_id` created under key `kid`.

        `not_after` caps the expiry (a session's maximum lifetime).
        """
        if "." in session_id:
            raise ValueError(f"session id {session_id!r} must not contain '.'")
        if not _NAME.fullmatch(kid):
            raise ValueError(f"key id {kid!r} must be 1-64 characters of [0-9A-Za-z_-]")
        expiry = int(self._clock() + self.ttl_s)
        if not_after is not None:
            expiry = min(expiry, int(not_after))
        return f"{session_id}.{kid}.{expiry}.{self._mac(session_id, kid, expiry)}", float(expiry)

    def claims(self, token: str | None) -> tuple[str, str]:
        """(session id, key id) of a valid token, or AuthError (invalid_token, token_expired)."""
        text = token or ""
        m = _TOKEN.fullmatch(text) if len(text) <= MAX_TOKEN_CHARS and text.isascii() else None
        if m is None:
            raise AuthError("invalid_token", "missing or malformed session token")
        sid, kid, expiry_text, mac = m.groups()
        expiry = int(expiry_text)
        if not hmac.compare_digest(mac, self._mac(sid, kid, expiry)):
            raise AuthError("invalid_token", "session token signature does not match")
        if self._clock() >= expiry:
            raise AuthError("token_expired", f"session token expired at {expiry}")
        if self._key_known is not None and not self._key_known(kid):
            raise AuthError("invalid_token", "the API key this token was minted under is no longer valid")
        return sid, kid

    def verify(self, token: str | None, session_id: str | None = None) -> str:
        """The session id the token grants, or AuthError (invalid_token, token_expired, forbidden)."""
        sid, _ = self.claims(token)
        if session_id is not None and sid != session_id:
            raise AuthError("forbidden", "this token belongs to another session")
        return sid
