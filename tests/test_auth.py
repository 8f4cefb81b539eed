"""API keys and session tokens."""

from __future__ import annotations

import pytest

from server.auth import ApiKeys, AuthError, TokenSigner, key_id

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_api_keys() -> None:
    keys = ApiKeys(["alpha-key", "beta-key"])
    assert keys.check("beta-key") == key_id("beta-key") != key_id("alpha-key")
    for bad in ("", None, "alpha", "alpha-key "):
        with pytest.raises(AuthError) as info:
            keys.check(bad)
        assert info.value.code == "bad_api_key"


def test_tokens_name_one_session_and_expire() -> None:
    clock = Clock()
    signer = TokenSigner(b"0123456789abcdef-secret", ttl_s=60, clock=clock)
    token, expiry = signer.issue("s1")
    assert expiry == clock.now + 60
    assert signer.verify(token) == "s1" == signer.verify(token, "s1")
    with pytest.raises(AuthError) as info:
        signer.verify(token, "s2")
    assert info.value.code == "forbidden"
    sid, exp, mac = token.split(".")
    for forged in (
        f"s2.{exp}.{mac}",
        f"{sid}.{int(exp) + 999}.{mac}",
        f"{sid}.{exp}.{mac[:-2]}AA",
        "junk",
        None,
        "a.b.c",
    ):
        with pytest.raises(AuthError) as info:
            signer.verify(forged)
        assert info.value.code == "invalid_token"
    other = TokenSigner(b"another-secret-of-16+", ttl_s=60, clock=clock)
    with pytest.raises(AuthError):
        other.verify(token)
    clock.now += 61
    with pytest.raises(AuthError) as info:
        signer.verify(token)
    assert info.value.code == "token_expired"


def test_signer_rejects_weak_secret_and_dotted_ids() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        TokenSigner(b"short", ttl_s=1)
    with pytest.raises(ValueError, match="must not contain"):
        TokenSigner(b"0123456789abcdef", ttl_s=1).issue("a.b")
