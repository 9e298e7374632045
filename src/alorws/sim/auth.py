"""Refresh tokens, access JWTs and their validation for the simulator (docs/protocol.md §2).

A refresh token maps to an account (login + portfolios, owned by the trading engine). ``POST
/refresh`` trades it for an access JWT whose claims mirror ALOR's (docs/protocol.md §2.4): ``sub``,
``ent``, ``agreements`` and ``portfolios`` (space-separated, three portfolios per agreement in claim
order), ``scope``, ``aud``, ``iss``, ``iat``, ``exp`` and a ``jti``.

docs/protocol.md §12.1: tokens are signed with a per-simulator HMAC key (``HS256``; ALOR signs with
ES256, but clients never verify the signature, they only read ``exp``). The simulator does verify
it, so a forged or foreign token is refused exactly like an expired one. The lifetime is
configurable (default 1800 s). :meth:`TokenService.expire_all` is the "expire every token now"
fault: it bumps an epoch carried in ``jti``, so every token issued before it is invalid from then
on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

import msgspec


__all__ = ["Claims", "TokenService"]

_HEADER: Final = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT","cty":"JWT"}').rstrip(b"=")
_SCOPE: Final = "OrdersRead OrdersCreate Trades Personal Stats"
_AUDIENCE: Final = (
    "Client WARP WarpATConnector subscriptionsApi CommandApi InstrumentApi TradingViewPlatform "
    "Hyperion"
)
_CACHE_MAX: Final = 10_000


class _Payload(msgspec.Struct, frozen=True):
    sub: str
    exp: int
    jti: str
    portfolios: str = ""


class Claims(msgspec.Struct, frozen=True, gc=False):
    """What the simulator needs from a valid access token.

    ``serial`` numbers the tokens in the order they were issued (from the ``jti``): the idle
    ``/cws`` fault tells tokens issued before a moment from those issued after it.
    """

    login: str
    portfolios: frozenset[str]
    exp: int
    serial: int = 0


_DECODE: Final = msgspec.json.Decoder(_Payload)
_ENCODE: Final = msgspec.json.Encoder()


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


class TokenService:
    """Issues and checks access JWTs; knows nothing about accounts beyond what it is given.

    Args:
        lifetime: seconds from issue to ``exp`` (docs/protocol.md §2.3: ALOR's are 1800 s).
        clock: wall clock in seconds (tests may pass a fake one).
    """

    def __init__(self, lifetime: float = 1800.0, clock: Callable[[], float] = time.time) -> None:
        self.lifetime = lifetime
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._epoch = 0
        self._serial = 0
        # token -> claims of tokens already verified (the signature check is the costly part);
        # cleared by expire_all. Expiry is still checked on every use.
        self._cache: dict[str, Claims] = {}

    @property
    def issued(self) -> int:
        """The serial of the last token issued (0 before the first): later ones have higher."""
        return self._serial

    def issue(
        self,
        login: str,
        portfolios: Iterable[str],
        agreements: Iterable[str] = (),
        allowed: Iterable[str] | None = None,
        lifetime: float | None = None,
    ) -> str:
        """A fresh access JWT for ``login``; ``allowed`` narrows the portfolios
        (docs/protocol.md §2.2).

        ``lifetime`` overrides the service's (tests pass a negative one for an expired token).
        """
        names = list(portfolios)
        if allowed is not None:
            keep = set(allowed)
            names = [p for p in names if p in keep]
        now = int(self._clock())
        self._serial += 1
        claims: dict[str, Any] = {
            "sub": login,
            "ent": "client",
            "ein": login,
            "clientid": login,
            "azp": "alorws-sim",
            "agreements": " ".join(agreements),
            "portfolios": " ".join(names),
            "scope": _SCOPE,
            "aud": _AUDIENCE,
            "iss": "Alor.Identity",
            "iat": now,
            # Whole seconds, like ALOR's; a sub-second lifetime still expires in the next second.
            "exp": now + (max(1, round(self.lifetime)) if lifetime is None else round(lifetime)),
            "jti": f"{self._epoch}.{self._serial}",
        }
        body = _b64(_ENCODE.encode(claims))
        signing_input = _HEADER + b"." + body
        sig = _b64(hmac.new(self._key, signing_input, hashlib.sha256).digest())
        return (signing_input + b"." + sig).decode("ascii")

    def verify(self, token: object) -> Claims | None:
        """The token's claims if it is a valid, unexpired JWT issued since the last expire-all."""
        if type(token) is not str or not token:
            return None
        claims = self._cache.get(token)
        if claims is None:
            claims = self._check(token)
            if claims is None:
                return None
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[token] = claims
        if claims.exp <= self._clock():
            return None
        return claims

    def _check(self, token: str) -> Claims | None:
        parts = token.split(".")
        if len(parts) != 3:
            return None
        header, body, sig = parts
        try:
            signing_input = f"{header}.{body}".encode("ascii")
            given = _unb64(sig)
            payload = _DECODE.decode(_unb64(body))
        except (ValueError, msgspec.DecodeError):  # bad base64, non-ASCII, bad JSON
            return None
        expected = hmac.new(self._key, signing_input, hashlib.sha256).digest()
        if not hmac.compare_digest(given, expected):
            return None
        epoch, _, serial = payload.jti.partition(".")
        if epoch != str(self._epoch) or not serial.isdigit():
            return None
        return Claims(payload.sub, frozenset(payload.portfolios.split()), payload.exp, int(serial))

    def expire_all(self) -> None:
        """Fault: every token issued so far becomes invalid at once (docs/protocol.md §12.1 expiry,
        on demand)."""
        self._epoch += 1
        self._cache.clear()
