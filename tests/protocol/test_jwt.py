"""Reading JWT claims without verifying the signature (docs/protocol.md §2.4)."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, strategies as st

from alorws.errors import AuthError, InvalidTokenError
from alorws.protocol.jwt import (
    MIN_REFRESH_MARGIN,
    JwtClaims,
    decode_claims,
    expires_in,
    make_unsigned_jwt,
    portfolio_kind,
    refresh_margin,
    should_refresh,
)


IAT = 1_722_431_736
EXP = IAT + 1800  # docs/protocol.md §2.3: 30 minutes, as in rd-hub-go's sample

ALOR_CLAIMS: dict[str, Any] = {
    "sub": "P063903",
    "ent": "client",
    "ein": "12345",
    "clientid": "654321",
    "azp": "8f3c1a2b-0000-4000-8000-000000000000",
    "agreements": "1111111 2222222",
    "portfolios": "D39004 G12345 750000X E00001",
    "scope": "OrdersRead OrdersCreate Trades Personal Stats",
    "aud": "Client WARP WarpATConnector subscriptionsApi CommandApi",
    "iss": "Alor.Identity",
    "exp": EXP,
    "iat": IAT,
    "extra": {"nested": [1, 2]},
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token_with_payload(payload: bytes | str) -> str:
    """A token whose payload part is ``payload`` (raw bytes are base64url-encoded)."""
    part = payload if isinstance(payload, str) else b64url(payload)
    return f"{b64url(b'{}')}.{part}.c2ln"


def assert_no_token_text(exc: BaseException, token: str) -> None:
    """The message must not contain the token, nor any of its parts longer than 4 characters."""
    text = str(exc)
    if token:
        assert token not in text
    for part in token.split("."):
        if len(part) > 4:
            assert part not in text


# -- claims ------------------------------------------------------------------------------------


def test_decode_alor_claims() -> None:
    """An ALOR-shaped token decodes, splitting space-separated claims and ignoring extras."""
    claims = decode_claims(make_unsigned_jwt(ALOR_CLAIMS))
    assert claims == JwtClaims(
        sub="P063903",
        exp=EXP,
        iat=IAT,
        ent="client",
        agreements=("1111111", "2222222"),
        portfolios=("D39004", "G12345", "750000X", "E00001"),
        scope=("OrdersRead", "OrdersCreate", "Trades", "Personal", "Stats"),
        aud=("Client", "WARP", "WarpATConnector", "subscriptionsApi", "CommandApi"),
        iss="Alor.Identity",
        clientid="654321",
        ein="12345",
        azp="8f3c1a2b-0000-4000-8000-000000000000",
    )
    assert claims.lifetime == 1800


def test_minimal_claims() -> None:
    """Only ``exp`` is required; the rest default to None or empty tuples."""
    claims = decode_claims(make_unsigned_jwt({"exp": EXP}))
    assert claims == JwtClaims(exp=EXP)
    assert claims.lifetime is None and claims.portfolios == ()


def test_list_claims_as_json_arrays() -> None:
    """``aud`` and friends sent as JSON arrays (the JWT standard's way) are accepted too."""
    claims = decode_claims(make_unsigned_jwt({"exp": EXP, "aud": ["Client", "WARP"]}))
    assert claims.aud == ("Client", "WARP")


def test_float_times_are_floored() -> None:
    """NumericDate claims with a fraction are read as whole seconds."""
    claims = decode_claims(make_unsigned_jwt({"exp": EXP + 0.9, "iat": IAT + 0.5}))
    assert (claims.exp, claims.iat) == (EXP, IAT)


def test_unsigned_jwt_shape() -> None:
    """make_unsigned_jwt builds header.payload.placeholder with the ALOR header and no padding."""
    token = make_unsigned_jwt({"exp": EXP})
    header, payload, signature = token.split(".")
    assert "=" not in token
    pad = "=" * (-len(header) % 4)
    assert json.loads(base64.urlsafe_b64decode(header + pad)) == {
        "alg": "ES256",
        "typ": "JWT",
        "cty": "JWT",
    }
    assert base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)) == b"unsigned"


@given(pad=st.integers(0, 3), sub=st.text(max_size=7))
def test_payload_of_any_length_with_or_without_padding(pad: int, sub: str) -> None:
    """Payloads of every length mod 4 decode, with the padding stripped or kept."""
    raw = msgspec.json.encode({"exp": EXP, "sub": sub + "x" * pad})
    encoded = base64.urlsafe_b64encode(raw).decode()
    for part in (encoded, encoded.rstrip("=")):
        assert decode_claims(token_with_payload(part)).sub == sub + "x" * pad


def test_base64url_alphabet() -> None:
    """Payload characters only base64url has ('-' and '_') decode correctly."""
    sub = "\xfb\xff?>"  # encodes to bytes whose base64 uses + and /
    raw = msgspec.json.encode({"exp": EXP, "sub": sub})
    part = b64url(raw)
    assert "-" in part or "_" in part
    assert decode_claims(token_with_payload(part)).sub == sub


# -- malformed tokens --------------------------------------------------------------------------

MALFORMED = {
    "empty": "",
    "one part": "eyJleHAiOjE3MjI0MzM1MzZ9",
    "two parts": "eyJhbGciOiJFUzI1NiJ9.eyJleHAiOjE3MjI0MzM1MzZ9",
    "four parts": "eyJhbGciOiJFUzI1NiJ9.eyJleHAiOjE3MjI0MzM1MzZ9.c2ln.extra",
    "refresh token": "3f1e9c2a-7b4d-4e8f-9a0b-1c2d3e4f5a6b",
    "bad base64 char": token_with_payload("eyJleHAiOjE3MjI0MzM1MzZ9*"),
    "bad base64 length": token_with_payload("eyJleHAiOjE3MjI0MzM1MzZ9A"),
    "inner padding": token_with_payload("eyJle=HAiOjE3MjI0MzM1MzZ9"),
    "non-ascii": token_with_payload("eyJleHAiOjE3MjI0MzM1MzZ9é"),
    "payload not json": token_with_payload(b"secret-not-json"),
    "payload json array": token_with_payload(b"[1722433536]"),
    "payload json string": token_with_payload(b'"exp"'),
    "no exp": token_with_payload(b'{"sub": "P063903", "iat": 1722431736}'),
    "exp a string": token_with_payload(b'{"exp": "1722433536"}'),
    "exp a bool": token_with_payload(b'{"exp": true}'),
    "exp infinite": token_with_payload(b'{"exp": 1e999}'),
    "iat infinite": token_with_payload(b'{"exp": 1722433536, "iat": -1e999}'),
    "portfolios a number": token_with_payload(b'{"exp": 1722433536, "portfolios": 5}'),
    "empty payload": token_with_payload(""),
    # Deeper than any recursion limit pytest or hypothesis may have set.
    "claim nested too deep": token_with_payload(
        b'{"exp": 1722433536, "x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    ),
}


@pytest.mark.parametrize("token", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_tokens(token: str) -> None:
    """Each malformed token raises InvalidTokenError, without the token in its message."""
    with pytest.raises(InvalidTokenError) as info:
        decode_claims(token)
    assert isinstance(info.value, AuthError) and isinstance(info.value, ValueError)
    exc = info.value
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
    assert_no_token_text(info.value, token)


def test_not_a_str() -> None:
    """A non-str token raises InvalidTokenError naming only the type."""
    with pytest.raises(InvalidTokenError, match="bytes"):
        decode_claims(b"a.b.c")  # type: ignore[arg-type]


def test_error_messages_name_the_problem() -> None:
    """Messages say what is wrong with the token."""
    cases = {
        "one part": "3 dot-separated parts, got 1",
        "bad base64 length": "not valid base64url",
        "payload not json": "not a JSON object",
        "no exp": "`exp`",
        "exp a string": "`$.exp`",
    }
    for name, needle in cases.items():
        with pytest.raises(InvalidTokenError, match="cannot read JWT <token") as info:
            decode_claims(MALFORMED[name])
        assert needle in str(info.value)


@given(junk=st.text(min_size=4, max_size=40).filter(lambda s: "." not in s))
def test_no_token_text_in_messages_for_random_junk(junk: str) -> None:
    """Random junk in any part never appears in the error message. The junk starts with a
    character no message uses, so a word of the message ("parts") cannot pass for a leak."""
    secret = "\u01c2" + junk
    for token in (secret, f"{secret}.{secret}", f"h.{secret}.s", token_with_payload(secret)):
        try:
            decode_claims(token)
        except InvalidTokenError as exc:
            assert_no_token_text(exc, token)


# -- expiry and refresh ------------------------------------------------------------------------


def test_expires_in() -> None:
    """expires_in counts seconds to exp from a token or from claims, negative once expired."""
    token = make_unsigned_jwt(ALOR_CLAIMS)
    assert expires_in(token, IAT) == 1800
    assert expires_in(decode_claims(token), EXP + 10.5) == -10.5


def test_refresh_margin_default() -> None:
    """The margin is max(30 s, 10% of lifetime), at most half the lifetime, else 30 s."""
    assert refresh_margin(JwtClaims(exp=EXP, iat=IAT)) == 180
    assert refresh_margin(JwtClaims(exp=IAT + 120, iat=IAT)) == MIN_REFRESH_MARGIN
    assert refresh_margin(JwtClaims(exp=IAT + 20, iat=IAT)) == 10
    assert refresh_margin(JwtClaims(exp=EXP)) == MIN_REFRESH_MARGIN
    assert refresh_margin(JwtClaims(exp=IAT, iat=EXP)) == MIN_REFRESH_MARGIN


def test_should_refresh() -> None:
    """A 30-minute token is refreshed in its last 180 s, or within an explicit margin."""
    claims = JwtClaims(exp=EXP, iat=IAT)
    assert not should_refresh(claims, IAT)
    assert not should_refresh(claims, EXP - 180)
    assert should_refresh(claims, EXP - 179.9)
    assert should_refresh(claims, EXP + 1)
    assert not should_refresh(claims, EXP - 6, margin=5)
    assert should_refresh(claims, EXP - 4, margin=5)
    assert should_refresh(make_unsigned_jwt({"exp": EXP}), EXP - 29)


# -- portfolios --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("portfolio", "kind"),
    [
        ("D39004", "stock"),
        ("G12345", "fx"),
        ("7500123", "derivatives"),
        ("E00001", "unified"),
        ("7502T0U", "derivatives"),  # recorded from production: not every firm code is 7500
        ("7510001", "derivatives"),
        ("75001234", "unknown"),
        ("7500", "unknown"),
        ("", "unknown"),
        ("X1", "unknown"),
    ],
)
def test_portfolio_kind(portfolio: str, kind: str) -> None:
    """Portfolio ids map to their market by prefix (docs/protocol.md §2.4)."""
    assert portfolio_kind(portfolio) == kind


def test_portfolios_from_a_token() -> None:
    """The portfolios claim of a token classifies into its markets."""
    claims = decode_claims(make_unsigned_jwt(ALOR_CLAIMS))
    kinds = [portfolio_kind(p) for p in claims.portfolios]
    assert kinds == ["stock", "fx", "derivatives", "unified"]
