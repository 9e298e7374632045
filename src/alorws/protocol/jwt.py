"""Read the claims of an ALOR access token (a JWT) without verifying its signature.

The client never verifies the token: the server does. It only needs to read ``exp`` to know
when to refresh (docs/protocol.md §2.3), and ``portfolios`` to discover the account's portfolios
(docs/protocol.md §2.4). Always read ``exp`` from the token rather than assuming the usual 30-minute
lifetime.

No message raised here ever contains the token; :func:`~alorws.errors.redact` stands in for it.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from typing import Any, Final, Literal

import msgspec

from ..errors import InvalidTokenError, redact


__all__ = [
    "MIN_REFRESH_MARGIN",
    "REFRESH_FRACTION",
    "JwtClaims",
    "PortfolioKind",
    "decode_claims",
    "expires_in",
    "make_unsigned_jwt",
    "portfolio_kind",
    "refresh_margin",
    "should_refresh",
]

#: Refresh at least this many seconds before ``exp``. The official UI uses 5 s
#: (docs/protocol.md §2.3), too tight for a client that also has to reconnect and resubscribe with
#: the new token.
MIN_REFRESH_MARGIN: Final = 30.0
#: ...or this share of the token's lifetime, whichever is longer (180 s for 30 minutes).
REFRESH_FRACTION: Final = 0.1

PortfolioKind = Literal["stock", "fx", "derivatives", "unified", "unknown"]


class JwtClaims(msgspec.Struct, frozen=True, kw_only=True):
    """The claims of an ALOR access token (docs/protocol.md §2.4). Unknown claims are ignored.

    Space-separated claims (``agreements``, ``portfolios``, and ``scope``/``aud`` when sent as
    strings) are split into tuples. Times are Unix seconds.
    """

    exp: int
    sub: str | None = None
    iat: int | None = None
    ent: str | None = None
    agreements: tuple[str, ...] = ()
    portfolios: tuple[str, ...] = ()
    scope: tuple[str, ...] = ()
    aud: tuple[str, ...] = ()
    iss: str | None = None
    clientid: str | None = None
    ein: str | None = None
    azp: str | None = None

    @property
    def lifetime(self) -> int | None:
        """``exp - iat`` in seconds, when ``iat`` is known and before ``exp``."""
        if self.iat is None or self.iat >= self.exp:
            return None
        return self.exp - self.iat


# The wire shape: numbers may be floats (a JWT NumericDate may be), and list-like claims may be
# space-separated strings (ALOR's way) or JSON arrays (the JWT standard's way for ``aud``).
_Words = str | list[str] | None


class _RawClaims(msgspec.Struct):
    exp: int | float
    sub: str | None = None
    iat: int | float | None = None
    ent: str | None = None
    agreements: _Words = None
    portfolios: _Words = None
    scope: _Words = None
    aud: _Words = None
    iss: str | None = None
    clientid: str | None = None
    ein: str | None = None
    azp: str | None = None


_decoder: Final = msgspec.json.Decoder(_RawClaims)
_encoder: Final = msgspec.json.Encoder()
_HEADER: Final = {"alg": "ES256", "typ": "JWT", "cty": "JWT"}


def _words(value: _Words) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    return tuple(value)


def _seconds(value: float, token: str, name: str) -> int:
    if not math.isfinite(value):
        raise InvalidTokenError(f"cannot read JWT {redact(token)}: claim {name!r} is not finite")
    return math.floor(value)


def _b64url_decode(part: str) -> bytes:
    # base64url without padding (RFC 7515 §2); put the padding back, reject foreign characters.
    data = part.translate(str.maketrans("-_", "+/")) + "=" * (-len(part) % 4)
    return base64.b64decode(data, validate=True)


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_claims(token: str) -> JwtClaims:
    """Read the claims of ``token`` without checking its signature.

    Raises:
        InvalidTokenError: the token is not three dot-separated parts, its payload is not
            base64url, not a JSON object, has no numeric ``exp``, or a known claim has the
            wrong type. The message names the problem, never the token.
    """
    if not isinstance(token, str):
        raise InvalidTokenError(f"a JWT must be a str, got {type(token).__name__}")
    # A JWS compact serialization: header.payload.signature (RFC 7515 §7.1). Only the payload
    # is read; the header and signature are the server's business.
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidTokenError(
            f"cannot read JWT {redact(token)}: expected 3 dot-separated parts, got {len(parts)}"
            " (pass the access token, not the refresh token)"
        )
    try:
        payload = _b64url_decode(parts[1])
    except (binascii.Error, ValueError):
        raise InvalidTokenError(
            f"cannot read JWT {redact(token)}: its payload is not valid base64url"
        ) from None
    try:
        raw = _decoder.decode(payload)
    except msgspec.ValidationError as exc:
        # msgspec's validation messages name the claim and the types, never the value.
        raise InvalidTokenError(f"cannot read JWT {redact(token)}: {exc}") from None
    except (msgspec.DecodeError, RecursionError):  # a payload nested too deep to read
        raise InvalidTokenError(
            f"cannot read JWT {redact(token)}: its payload is not a JSON object"
        ) from None
    return JwtClaims(
        exp=_seconds(raw.exp, token, "exp"),
        sub=raw.sub,
        iat=None if raw.iat is None else _seconds(raw.iat, token, "iat"),
        ent=raw.ent,
        agreements=_words(raw.agreements),
        portfolios=_words(raw.portfolios),
        scope=_words(raw.scope),
        aud=_words(raw.aud),
        iss=raw.iss,
        clientid=raw.clientid,
        ein=raw.ein,
        azp=raw.azp,
    )


def _claims(token_or_claims: str | JwtClaims) -> JwtClaims:
    if isinstance(token_or_claims, JwtClaims):
        return token_or_claims
    return decode_claims(token_or_claims)


def expires_in(token_or_claims: str | JwtClaims, now: float) -> float:
    """Seconds from ``now`` (Unix seconds) until the token expires; negative once expired."""
    return _claims(token_or_claims).exp - now


def refresh_margin(token_or_claims: str | JwtClaims) -> float:
    """How long before ``exp`` to refresh the token, by default.

    ``max(MIN_REFRESH_MARGIN, REFRESH_FRACTION * lifetime)``: 180 s for ALOR's usual 30-minute
    tokens, 30 s for short ones. Capped at half the lifetime so a very short-lived token (as in
    tests) is not refreshed as soon as it is issued. Without ``iat`` the lifetime is unknown and
    the margin is ``MIN_REFRESH_MARGIN``.
    """
    lifetime = _claims(token_or_claims).lifetime
    if lifetime is None:
        return MIN_REFRESH_MARGIN
    return min(max(MIN_REFRESH_MARGIN, REFRESH_FRACTION * lifetime), lifetime / 2)


def should_refresh(
    token_or_claims: str | JwtClaims, now: float, margin: float | None = None
) -> bool:
    """Whether the token should be replaced now: less than ``margin`` seconds remain.

    ``margin`` defaults to :func:`refresh_margin`. ``now`` is Unix seconds (``time.time()``).
    """
    claims = _claims(token_or_claims)
    if margin is None:
        # docs/protocol.md §2.3: the UI's 5 s margin needed a fix for "Invalid JWT token!"; we leave
        # room for a token fetch plus a reconnect-and-resubscribe burst with the new token.
        margin = refresh_margin(claims)
    return expires_in(claims, now) < margin


def portfolio_kind(portfolio_id: str) -> PortfolioKind:
    """The market of a portfolio, from its id (docs/protocol.md §2.4).

    ``D…`` stock, ``G…`` FX, ``E…`` unified ("ЕДП"), and FORTS derivatives: a FORTS client
    code is seven characters, a ``75xx`` firm code plus three (``7500123``; a production
    portfolio ``7502T0U`` shows the firm part is not always ``7500``); anything else
    ``'unknown'``.
    """
    if portfolio_id.startswith("D"):
        return "stock"
    if portfolio_id.startswith("G"):
        return "fx"
    if len(portfolio_id) == 7 and portfolio_id.startswith("75") and portfolio_id.isalnum():
        return "derivatives"
    if portfolio_id.startswith("E"):
        return "unified"
    return "unknown"


def make_unsigned_jwt(claims: Mapping[str, Any]) -> str:
    """Build a JWT-shaped token carrying ``claims``, for tests and the simulator.

    It is **not signed**: the signature part is a fixed placeholder, so any server that checks
    signatures rejects it. List claims ALOR sends space-separated (``portfolios``, ...) should
    be passed as strings, as ALOR does.
    """
    header = _b64url_encode(_encoder.encode(_HEADER))
    payload = _b64url_encode(_encoder.encode(dict(claims)))
    return f"{header}.{payload}.{_b64url_encode(b'unsigned')}"
