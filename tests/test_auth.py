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


KID = key_id("alpha-key")


def test_tokens_name_one_session_and_expire() -> None:
    clock = Clock()
    signer = TokenSigner(b"0123456789abcdef-secret", ttl_s=60, clock=clock)
    token, expiry = signer.issue("s1", KID)
    assert expiry == clock.now + 60
    assert signer.verify(token) == "s1" == signer.verify(token, "s1")
    assert signer.claims(token) == ("s1", KID)
    with pytest.raises(AuthError) as info:
        signer.verify(token, "s2")
    assert info.value.code == "forbidden"
    sid, kid, exp, mac = token.split(".")
    for forged in (
        f"s2.{kid}.{exp}.{mac}",
        f"{sid}.{key_id('beta-key')}.{exp}.{mac}",
        f"{sid}.{kid}.{int(exp) + 999}.{mac}",
        f"{sid}.{kid}.{exp}.{mac[:-2]}AA",
        "junk",
        None,
        "a.b.c",
        "a.b.c.d",
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


def test_malformed_tokens_are_invalid_token_and_bounded() -> None:
    """Row 8: non-ASCII digits, huge expiries and non-ASCII MACs are `invalid_token`, not a crash."""
    signer = TokenSigner(b"0123456789abcdef-secret", ttl_s=60)
    token, _ = signer.issue("s1", KID)
    sid, kid, exp, mac = token.split(".")
    arabic, e_acute = "\u0661" * len(exp), "\u00e9" * len(mac)
    for forged in (
        f"{sid}.{kid}.\u00b2.{mac}",  # superscript two: str.isdigit() says yes
        f"{sid}.{kid}.{arabic}.{mac}",  # Arabic-Indic digits
        f"{sid}.{kid}.{'9' * 4300}.{mac}",  # past int()'s digit limit
        f"{sid}.{kid}.{exp}.{e_acute}",  # a non-ASCII MAC
        f"{sid}.{kid}.{exp}.{mac}" + "x" * 300,
        "\ud800.a.1.b",
    ):
        with pytest.raises(AuthError) as info:
            signer.verify(forged)
        assert info.value.code == "invalid_token", forged[:40]


def test_tokens_stop_working_when_their_key_is_removed() -> None:
    """Row 12: a token names its key; a signer whose keys no longer include it refuses it."""
    before = ApiKeys(["alpha-key", "beta-key"])
    signer = TokenSigner(b"0123456789abcdef-secret", ttl_s=60, key_known=before.known)
    token, _ = signer.issue("s1", KID)
    assert signer.verify(token) == "s1"
    after = ApiKeys(["beta-key"])
    restarted = TokenSigner(b"0123456789abcdef-secret", ttl_s=60, key_known=after.known)
    with pytest.raises(AuthError) as info:
        restarted.verify(token)
    assert info.value.code == "invalid_token" and "no longer valid" in info.value.message


def test_token_expiry_is_capped_by_not_after() -> None:
    clock = Clock()
    signer = TokenSigner(b"0123456789abcdef-secret", ttl_s=60, clock=clock)
    _, expiry = signer.issue("s1", KID, not_after=clock.now + 5)
    assert expiry == clock.now + 5


def test_signer_rejects_weak_secret_and_dotted_ids() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        TokenSigner(b"short", ttl_s=1)
    with pytest.raises(ValueError, match="must not contain"):
        TokenSigner(b"0123456789abcdef", ttl_s=1).issue("a.b", KID)
