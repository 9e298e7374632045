"""The ALOR session a gateway serves, and the connection budget it holds it to."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from typing import Final

from ..client.client import AlorClient
from ..errors import ConfigurationError


__all__ = ["BUDGET_LIMITS", "ClientFactory", "Session"]

#: Builds the gateway's (not yet started) ALOR client when it starts leading. Called with no
#: arguments, or, when the gateway is given a budget, with those limits as keyword arguments
#: (``functools.partial(AlorClient, token, ...)`` takes them).
ClientFactory = Callable[..., AlorClient]

#: The limits a gateway takes, named as :class:`~alorws.client.AlorClient`'s arguments.
BUDGET_LIMITS: Final = (
    "max_connections",
    "max_subscriptions_per_connection",
    "reserve_connections",
)

# OrderClient states in which its /cws connection counts against the account's connections.
_CWS_HELD: Final = frozenset({"connecting", "authorizing", "open"})


class Session:
    """The :class:`~alorws.client.AlorClient` a gateway serves, given started or built by a
    factory while the gateway leads, and its connection budget.

    The budget is the client's: it shards market data over as many connections as the limits
    allow, keeps ``reserve_connections`` free of market data, and refuses what does not fit
    before sending. Limits given here (None: the client's own) are passed to the factory as
    keyword arguments; a started client must already have them (its budget cannot change).

    Raises:
        ConfigurationError: a limit out of range, a started client with other limits, or a
            factory that cannot take the limits.
    """

    def __init__(
        self,
        client: AlorClient | ClientFactory,
        *,
        max_connections: int | None = None,
        max_subscriptions_per_connection: int | None = None,
        reserve_connections: int | None = None,
    ) -> None:
        given = (max_connections, max_subscriptions_per_connection, reserve_connections)
        self.limits: dict[str, int] = {
            name: value
            for name, value in zip(BUDGET_LIMITS, given, strict=True)
            if value is not None
        }
        _check_limits(self.limits)
        if isinstance(client, AlorClient):
            self._client: AlorClient | None = client
            self._factory: ClientFactory | None = None
            self._check_client(client, "the started AlorClient given to the gateway")
        else:
            self._client = None
            self._factory = client
            _check_factory(client, self.limits)

    @property
    def has_factory(self) -> bool:
        """True when the gateway builds (and closes) its client itself."""
        return self._factory is not None

    @property
    def active(self) -> AlorClient | None:
        """The client being served, or None (a standby, or stopped with a factory)."""
        return self._client

    async def open(self) -> None:
        """Build and start the client with the factory (nothing to do with a given client)."""
        if self._factory is None or self._client is not None:
            return
        client = self._factory(**self.limits)
        try:
            self._check_client(client, "the client the factory built")
            await client.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await client.aclose()
            raise
        self._client = client

    async def close(self) -> None:
        """Close the client if the factory built it (a given client is the caller's)."""
        if self._factory is not None and self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(Exception):
                await client.aclose()

    def budget(self) -> dict[str, int]:
        """Connections and subscriptions in use and the limits (zeros without a client)."""
        client = self._client
        if client is None:
            return dict.fromkeys(
                ("connections", "subscriptions", "max_subscriptions", *BUDGET_LIMITS), 0
            )
        cstats = client.stats()
        orders = cstats.get("orders") or {}
        cws = 1 if orders.get("state") in _CWS_HELD else 0
        return {
            "connections": int(cstats["connections"]) + cws,
            "subscriptions": int(cstats["subscriptions"]),
            "max_subscriptions": client.max_connections * client.max_subscriptions_per_connection,
            **{name: int(getattr(client, name)) for name in BUDGET_LIMITS},
        }

    def _check_client(self, client: AlorClient, what: str) -> None:
        wrong = [
            f"{name}={getattr(client, name)} (the gateway's: {value})"
            for name, value in self.limits.items()
            if getattr(client, name) != value
        ]
        if wrong:
            raise ConfigurationError(
                f"{what} has another budget: {', '.join(wrong)}; build it with the gateway's "
                "limits, or give the gateway none"
            )


def _check_limits(limits: dict[str, int]) -> None:
    """AlorClient's rules, checked when the gateway is made rather than when it first leads."""
    for name, value in limits.items():
        low = 0 if name == "reserve_connections" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigurationError(f"{name} must be an integer >= {low}, got {value!r}")
    most, reserve = limits.get("max_connections"), limits.get("reserve_connections")
    if most is not None and reserve is not None and reserve >= most:
        raise ConfigurationError(
            f"reserve_connections ({reserve}) must be below max_connections ({most})"
        )


def _check_factory(factory: ClientFactory, limits: dict[str, int]) -> None:
    if not limits:
        return
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a callable without a signature: found out when called
        return
    try:
        signature.bind(**limits)
    except TypeError:
        raise ConfigurationError(
            f"the client factory must take the gateway's limits as keyword arguments "
            f"({', '.join(limits)}): e.g. functools.partial(AlorClient, token, ...)"
        ) from None
