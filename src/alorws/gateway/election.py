"""Leader election between the gateways of one prefix, on a JetStream KV lease."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from ..bus import wire
from ..errors import InvalidState


__all__ = ["Election", "Role"]

log = logging.getLogger("alorws.gateway")


class Role(enum.StrEnum):
    """What a gateway does now: it serves (``LEADER``), waits for the lead (``STANDBY``), or
    is not running (``STOPPED``). A ``StrEnum``: ``stats()["role"]`` is its string."""

    STOPPED = "stopped"
    STANDBY = "standby"
    LEADER = "leader"


class Election:
    """The lead of one gateway among those of a prefix, or of a gateway alone.

    Without a ``ttl`` the gateway leads as soon as it starts. With one, the leader is the
    gateway holding key ``leader`` of the KV bucket ``<PREFIX>_LEADER``, whose entries expire
    ``ttl`` seconds after they were written:

    * the leader rewrites the key every ``ttl / 3`` with a compare-and-set on the revision it
      last wrote (it notices at once when another gateway holds the key; an update whose reply
      was lost is recognised by the entry naming this node, an entry that expired is created
      again if still free) and stops serving if it could not renew for ``ttl``;
    * a standby reads the key every ``ttl / 4``: it creates it when it is gone (expired, or
      deleted by a leader that stopped cleanly) or, if the revision has not moved for ``ttl``
      on its own clock, replaces it with a compare-and-set on that revision (no clock is
      compared across machines);
    * only then does it call ``serve`` (the gateway builds its ALOR client, answers requests
      and announces itself); when the lead is lost it calls ``stop``. A clean stop deletes
      the key, so that a standby takes over at its next look.

    Args:
        node: this gateway's name, unique among the gateways of the prefix.
        prefix: the subject prefix (names the bucket).
        ttl: the lease in seconds, or None (lead at once, alone on the prefix).
        counters: the gateway's counters (``leaderships``, ``takeovers``).
        serve: start serving; raising makes the gateway give the lead back.
        stop: stop serving (the lead is lost, or the gateway stops).
    """

    def __init__(
        self,
        node: str,
        prefix: str,
        ttl: float | None,
        counters: dict[str, int],
        *,
        serve: Callable[[], Awaitable[None]],
        stop: Callable[[], Awaitable[None]],
    ) -> None:
        self.node = node
        self.prefix = prefix
        self.ttl = ttl
        self.role = Role.STOPPED
        self.leader_node: str | None = None  # the leader as last seen
        self.since = 0.0  # wall-clock time this gateway took the lead (announced)
        self._counters = counters
        self._serve = serve
        self._stop = stop
        self._kv: KeyValue | None = None
        self._elector: asyncio.Task[None] | None = None
        self._holder: asyncio.Task[str] | None = None
        self._rev: int | None = None  # revision of our leader entry while leading
        self._lease_until = 0.0
        self._seen_rev: int | None = None  # a standby's view of the leader entry
        self._seen_at = 0.0
        self._saw_other = False

    @property
    def is_leader(self) -> bool:
        """True while this gateway serves."""
        return self.role is Role.LEADER

    async def start(self) -> None:
        """Lead at once (no ``ttl``), or campaign once and keep campaigning in the
        background (the bucket made by :meth:`ensure_bucket` first)."""
        if self.ttl is None:
            await self._lead(None)
            return
        if self._kv is None:
            raise InvalidState("the leader bucket is not made yet: call ensure_bucket() first")
        self.role = Role.STANDBY
        rev = await self._campaign()
        if rev is not None:
            await self._lead(rev)
        self._elector = asyncio.get_running_loop().create_task(self._elect())

    async def ensure_bucket(self, js: JetStreamContext) -> None:
        """Create the leader bucket, or use it as it is (nothing to do without a ``ttl``)."""
        if self.ttl is None:
            return
        bucket = wire.leader_bucket_name(self.prefix)
        config = KeyValueConfig(bucket=bucket, history=1, ttl=self.ttl, storage=StorageType.FILE)
        try:
            self._kv = await js.create_key_value(config)
        except BadRequestError:  # exists with another TTL: use it as it is
            log.warning("gateway: bucket %s exists with another configuration; using it", bucket)
            self._kv = await js.key_value(bucket)

    async def aclose(self) -> None:
        """Stop campaigning; if leading, stop serving and hand the lead over."""
        if self._elector is not None:
            self._elector.cancel()
            with contextlib.suppress(BaseException):
                await self._elector
            self._elector = None
        await self._stop_holding()
        if self.role is Role.LEADER:
            await self._stop()
            await self._resign()
        self.role = Role.STOPPED

    def announcement(self, since: float | None = None) -> bytes:
        """The :class:`~alorws.bus.wire.LeaderInfo` of this gateway's lead, encoded; ``since``
        (default: when it took the lead) is now for a claim of the lead."""
        info = wire.LeaderInfo(node=self.node, since=self.since if since is None else since)
        return msgspec.json.encode(info)

    # -- the lease ---------------------------------------------------------------------------

    async def _leader_entry(self) -> tuple[int, str] | None:
        """(revision, node) of the leader entry, or None when there is none."""
        assert self._kv is not None
        try:
            entry = await self._kv.get(wire.LEADER_KEY)
        except KeyNotFoundError:  # never written, expired, or deleted
            return None
        try:
            node = msgspec.json.decode(entry.value or b"", type=wire.LeaderInfo).node
        except Exception:  # an unreadable entry still holds the lead: only its name is lost
            node = "?"
        return int(entry.revision or 0), node

    async def _campaign(self) -> int | None:
        """One look at the lease: take it if it is free or stale; the revision if we did."""
        assert self._kv is not None and self.ttl is not None
        found = await self._leader_entry()
        now = time.monotonic()
        if found is None:
            try:
                return await self._kv.create(wire.LEADER_KEY, self.announcement(time.time()))
            except BadRequestError:  # another gateway created it first
                return None
        rev, node = found
        self.leader_node = node
        if node != self.node:
            self._saw_other = True
        if rev != self._seen_rev:
            self._seen_rev, self._seen_at = rev, now
            return None
        if now - self._seen_at < self.ttl:
            return None
        log.warning(
            "gateway %s: leader %s has not renewed its lease for %.1f s; taking over",
            self.node,
            node,
            now - self._seen_at,
        )
        try:
            claim = self.announcement(time.time())
            return await self._kv.update(wire.LEADER_KEY, claim, last=rev)
        except BadRequestError:  # renewed or taken meanwhile
            return None

    async def _lead(self, rev: int | None) -> None:
        """Serve; with election, ``rev`` is our lease, renewed in the background."""
        self.role = Role.LEADER
        self.leader_node = self.node
        self.since = time.time()
        self._counters["leaderships"] += 1
        if rev is not None:
            if self._saw_other:
                self._counters["takeovers"] += 1
                log.warning("gateway %s: took the lead", self.node)
            else:
                log.info("gateway %s: leading", self.node)
            self._saw_other = False
            self._rev = rev
            self._lease_until = time.monotonic() + (self.ttl or 0.0)
            self._holder = asyncio.get_running_loop().create_task(self._hold())
        try:
            await self._serve()
        except BaseException:
            await self._stop_holding()
            await self._stop()
            await self._resign()
            self.role = Role.STANDBY
            raise

    async def _hold(self) -> str:
        """Renew the lease until it is lost; returns why."""
        assert self._kv is not None and self.ttl is not None
        kv, ttl, key = self._kv, self.ttl, wire.LEADER_KEY
        while True:
            await asyncio.sleep(ttl / 3)
            sent = time.monotonic()
            try:
                async with asyncio.timeout(ttl / 3):
                    self._rev = await kv.update(key, self.announcement(), last=self._rev)
                self._lease_until = sent + ttl
                continue
            except KeyWrongLastSequenceError:
                pass
            except Exception as exc:  # NATS unreachable or slow: hold on until the lease ends
                if time.monotonic() >= self._lease_until:
                    return f"could not renew the leader lease for {ttl} s ({exc!r})"
                continue
            # Not the revision we wrote: an update whose reply we missed, our entry expired,
            # or another gateway took it.
            try:
                found = await self._leader_entry()
                if found is not None and found[1] == self.node:
                    self._rev = found[0]
                    continue
                if found is None:
                    self._rev = await kv.create(key, self.announcement())
                    self._lease_until = sent + ttl
                    continue
            except Exception as exc:
                log.debug("gateway %s: re-reading the lease failed: %r", self.node, exc)
                if time.monotonic() < self._lease_until:
                    continue
            return "another gateway holds the leader lease"

    async def _elect(self) -> None:
        """Lead while the lease holds; otherwise look at it every ``ttl / 4``."""
        assert self.ttl is not None
        ttl = self.ttl
        while True:
            if self.role is Role.LEADER and self._holder is not None:
                try:
                    reason = await self._holder
                except Exception as exc:
                    reason = repr(exc)
                self._holder = None
                log.error("gateway %s: stops serving: %s", self.node, reason)
                await self._stop()
                self.role = Role.STANDBY
                self._seen_rev = None
                continue
            await asyncio.sleep(ttl / 4)
            try:
                rev = await self._campaign()
            except Exception as exc:
                log.debug("gateway %s: election round failed: %r", self.node, exc)
                continue
            if rev is None:
                continue
            try:
                await self._lead(rev)
            except Exception as exc:
                log.error("gateway %s: won the lead but cannot serve: %s", self.node, exc)
                await asyncio.sleep(ttl)

    async def _stop_holding(self) -> None:
        """Stop renewing the lease."""
        if self._holder is not None:
            self._holder.cancel()
            with contextlib.suppress(BaseException):
                await self._holder
            self._holder = None

    async def _resign(self) -> None:
        """Delete our leader entry (a standby takes over at its next look)."""
        kv, rev, self._rev = self._kv, self._rev, None
        if kv is None or rev is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await kv.delete(wire.LEADER_KEY, last=rev)
