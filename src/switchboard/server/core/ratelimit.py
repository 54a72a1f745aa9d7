"""Request-rate limits per bearer token and per org: HTTP 429 / RESOURCE_EXHAUSTED with a retry
hint (docs/rest-families.md: "HTTP 429 is only for per-token request-rate limits"; decision 30).

Every authenticated RPC takes one token from two buckets, its bearer token's and its org's, each
refilling at `rate` per second up to `burst`. A request refused by either takes from neither.
Public RPCs (no token) are not limited here.

One process (SQLite): the buckets live in this process's memory, and are exact.

Several processes (PostgreSQL): each bucket lives in the database (`rate_limit_buckets`, one row
per token or org). A process leases tokens from a row in blocks of `lease_seconds` worth of the
rate and spends them locally, so the database sees one short statement per block per key and
process, never one per request. The next block is leased when half of the current one is spent,
so a request waits for the database only when its process spends half a block faster than one
statement takes. Everything admitted was first taken from the shared bucket: over any T seconds
a key admits at most burst + rate·T requests, plus what processes held when those T seconds
began (less than 1.5 blocks each). A process that finds the shared bucket empty asks again only
once a block's worth could have refilled (about `lease_seconds` later; that is the retry hint
its refusals give), so a key over its limit costs each process about 1/`lease_seconds`
statements a second, however many requests it refuses. If the database fails, each process
grants itself one second's worth per second until it answers again: the limit then holds per
process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import text

from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database
from switchboard.server.core.errors import TooManyRequests, retry_after_seconds

log = logging.getLogger("switchboard.ratelimit")

_SWEEP_SECONDS = 60.0  # how often idle keys are forgotten (memory, and full rows in the database)
_FAILURE_RETRY_SECONDS = 1.0  # after a failed lease: local allowance, then ask the database again


@dataclass(frozen=True)
class RateLimit:
    """`rate` requests per second, `burst` at once after idling; rate 0 means no limit."""

    rate: float = 0.0
    burst: float = 0.0

    @classmethod
    def per_second(cls, rate: float, burst: float | None = None) -> RateLimit:
        """A limit of `rate`/s; the burst defaults to one second's worth (at least 1)."""
        if rate <= 0:
            return cls()
        return cls(rate, max(1.0, burst if burst is not None else rate))

    def __post_init__(self) -> None:
        if self.rate > 0 and self.burst < 1:
            raise ValueError(f"a rate limit's burst must be at least 1, not {self.burst}")

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def describe(self) -> str:
        return f"{self.rate:g} requests per second (burst {self.burst:g})"


_T = "rate_limit_buckets"
# One statement per lease, for SQLite and PostgreSQL alike: insert a full bucket minus what is
# wanted, or refill the existing one up to its burst and take what is wanted (`excluded.taken`),
# or what is there if at least 1, or nothing. Every SET expression reads the row as it was.
_NEWER = f"excluded.refilled_at > {_T}.refilled_at"
_GROWN = f"({_T}.level + (CASE WHEN {_NEWER} THEN excluded.refilled_at - {_T}.refilled_at ELSE 0 END) * excluded.rate)"  # noqa: E501
_REFILLED = f"(CASE WHEN {_GROWN} > excluded.burst THEN excluded.burst ELSE {_GROWN} END)"
_TAKE = (
    f"(CASE WHEN {_REFILLED} >= excluded.taken THEN excluded.taken"
    f" WHEN {_REFILLED} >= 1 THEN {_REFILLED} ELSE 0 END)"
)
_LEASE = text(
    f"INSERT INTO {_T} (bucket, level, refilled_at, rate, burst, taken)"
    " VALUES (:bucket, :level, :now, :rate, :burst, :want)"
    f" ON CONFLICT (bucket) DO UPDATE SET level = {_REFILLED} - {_TAKE}, taken = {_TAKE},"
    f" refilled_at = CASE WHEN {_NEWER} THEN excluded.refilled_at ELSE {_T}.refilled_at END,"
    " rate = excluded.rate, burst = excluded.burst"
    " RETURNING taken, level"
)
_SWEEP = text(f"DELETE FROM {_T} WHERE refilled_at + (burst - level) / rate <= :now")


class BucketStore(Protocol):
    async def lease(
        self, bucket: str, limit: RateLimit, want: float, now: float
    ) -> tuple[float, float]:
        """Take up to `want` tokens: (taken, tokens left)."""
        ...

    async def sweep(self, now: float) -> int:
        """Forget full buckets; how many."""
        ...


class DatabaseBuckets:
    """Shared buckets in `rate_limit_buckets`, one short transaction per lease."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def lease(
        self, bucket: str, limit: RateLimit, want: float, now: float
    ) -> tuple[float, float]:
        params = {
            "bucket": bucket,
            "level": limit.burst - want,
            "now": now,
            "rate": limit.rate,
            "burst": limit.burst,
            "want": want,
        }
        async with self._db.write() as session:
            taken, level = (await session.execute(_LEASE, params)).one()
        return float(taken), float(level)

    async def sweep(self, now: float) -> int:
        async with self._db.write() as session:
            result = await session.execute(_SWEEP, {"now": now})
        return int(getattr(result, "rowcount", 0) or 0)


class _Bucket:
    """A bucket of this process alone (exact)."""

    __slots__ = ("at", "level")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.level = limit.burst
        self.at = now

    def wait(self, limit: RateLimit, now: float) -> float:
        """Refill; seconds until a token is there (0: one is)."""
        if now > self.at:
            self.level = min(limit.burst, self.level + (now - self.at) * limit.rate)
            self.at = now
        return 0.0 if self.level >= 1.0 else (1.0 - self.level) / limit.rate


class _Lease:
    """This process's share of a shared bucket: credit leased and not yet spent."""

    __slots__ = ("bucket", "credit", "pending", "retry_at", "used_at")

    def __init__(self, bucket: str, now: float) -> None:
        self.bucket = bucket
        self.credit = 0.0
        self.retry_at = 0.0  # no lease before this: the shared bucket was found empty
        self.pending: asyncio.Task[None] | None = None
        self.used_at = now


def _block(limit: RateLimit, lease_seconds: float) -> float:
    """Tokens per lease: `lease_seconds` of the rate, at least 1, at most the burst."""
    if not limit.enabled:
        return 0.0
    return max(1.0, min(math.floor(limit.burst), math.ceil(limit.rate * lease_seconds)))


class RateLimiter:
    """Admits or refuses one authenticated request (`admit`) by its token's and org's limits."""

    def __init__(
        self,
        clock: Clock,
        *,
        per_token: RateLimit,
        per_org: RateLimit,
        store: BucketStore | None = None,
        lease_seconds: float = 0.02,
    ) -> None:
        self._clock = clock
        self._limits = {"token": per_token, "org": per_org}
        self._store = store
        self._blocks = {kind: _block(limit, lease_seconds) for kind, limit in self._limits.items()}
        self._buckets: dict[str, dict[str, _Bucket]] = {"token": {}, "org": {}}
        self._leases: dict[str, dict[str, _Lease]] = {"token": {}, "org": {}}
        self._sweeper: asyncio.Task[None] | None = None
        self._failing_since: float | None = None
        # For operators (logged at stop) and tests: statements sent to the shared store, and
        # requests refused.
        self.leases = 0
        self.refused = 0

    @property
    def enabled(self) -> bool:
        return any(limit.enabled for limit in self._limits.values())

    @property
    def shared(self) -> bool:
        return self._store is not None

    @property
    def tracked(self) -> int:
        """Keys this process remembers (buckets or leases)."""
        buckets = sum(len(keys) for keys in self._buckets.values())
        return buckets + sum(len(keys) for keys in self._leases.values())

    async def start(self) -> None:
        if self.enabled and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="rate-limit-sweeper")

    async def stop(self) -> None:
        tasks = [t for t in (self._sweeper, *self._pending()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._sweeper = None
        if self.enabled:
            log.info(
                "rate limits: stopped",
                extra={"leases": self.leases, "refused": self.refused, "shared": self.shared},
            )

    def _pending(self) -> list[asyncio.Task[None]]:
        return [
            lease.pending
            for leases in self._leases.values()
            for lease in leases.values()
            if lease.pending is not None
        ]

    async def admit(self, token: str, org: str) -> None:
        """Take one request from `token`'s and `org`'s buckets, or raise TooManyRequests."""
        now = self._clock.now().timestamp()
        if self._store is None:
            self._admit_local(token, org, now)
        else:
            await self._admit_shared(token, org, now)

    # -- one process: exact buckets in memory ---------------------------------------------------

    def _admit_local(self, token: str, org: str, now: float) -> None:
        taken: list[_Bucket] = []
        worst = ("", 0.0)
        for kind, key in (("token", token), ("org", org)):
            limit = self._limits[kind]
            if not limit.enabled:
                continue
            buckets = self._buckets[kind]
            bucket = buckets.get(key)
            if bucket is None:
                bucket = buckets[key] = _Bucket(limit, now)
            wait = bucket.wait(limit, now)
            if wait > worst[1]:
                worst = (kind, wait)
            taken.append(bucket)
        if worst[1] > 0:
            raise self._refusal(worst[0], org, worst[1])
        for bucket in taken:
            bucket.level -= 1.0

    # -- several processes: leases from shared buckets ------------------------------------------

    async def _admit_shared(self, token: str, org: str, now: float) -> None:
        held: list[tuple[str, _Lease]] = []
        for kind, key in (("token", token), ("org", org)):
            if not self._limits[kind].enabled:
                continue
            leases = self._leases[kind]
            lease = leases.get(key)
            if lease is None:
                lease = leases[key] = _Lease(_bucket_key(kind, key), now)
            if lease.credit < 1.0:
                await self._replenish(kind, lease, now)
            held.append((kind, lease))
        short = [(kind, lease) for kind, lease in held if lease.credit < 1.0]
        if short:
            now = self._clock.now().timestamp()
            kind, lease = max(short, key=lambda item: item[1].retry_at)
            raise self._refusal(kind, org, max(lease.retry_at - now, 0.001))
        for kind, lease in held:
            lease.credit -= 1.0
            lease.used_at = now
            # Lease the next block while half of this one is left, so requests rarely wait.
            low = lease.credit < self._blocks[kind] / 2
            if low and lease.pending is None and now >= lease.retry_at:
                lease.pending = asyncio.create_task(self._lease(kind, lease))

    async def _replenish(self, kind: str, lease: _Lease, now: float) -> None:
        if lease.pending is None:
            if now < lease.retry_at:
                return  # the shared bucket was empty: not before a block could have refilled
            lease.pending = asyncio.create_task(self._lease(kind, lease))
        await asyncio.shield(lease.pending)

    async def _lease(self, kind: str, lease: _Lease) -> None:
        limit, block = self._limits[kind], self._blocks[kind]
        want = block  # a whole block: one write per block spent (at most 1.5 blocks held)
        now = self._clock.now().timestamp()
        assert self._store is not None
        self.leases += 1
        try:
            taken, level = await self._store.lease(lease.bucket, limit, want, now)
        except Exception:
            # Fail open, per process: one second's worth, then ask again.
            if self._failing_since is None:
                self._failing_since = now
                log.exception("rate limits: cannot lease from the database; limiting per process")
            lease.credit += limit.rate * _FAILURE_RETRY_SECONDS
            lease.retry_at = now + _FAILURE_RETRY_SECONDS
            return
        finally:
            lease.pending = None  # waiters resume only after the rest of this task has run
        if self._failing_since is not None:
            log.warning("rate limits: the database answers again; limits are shared again")
            self._failing_since = None
        lease.credit += taken
        if taken < want:
            lease.retry_at = now + max(block - level, 1.0 - level, 0.0) / limit.rate
        else:
            lease.retry_at = 0.0

    # -- refusals and housekeeping --------------------------------------------------------------

    def _refusal(self, kind: str, org: str, wait: float) -> TooManyRequests:
        self.refused += 1
        limit = self._limits[kind]
        whose = "this token" if kind == "token" else f"org {org!r}"
        return TooManyRequests(
            f"too many requests for {whose}: the limit is {limit.describe()}; "
            f"retry after {retry_after_seconds(wait)} s",
            retry_after=wait,
        )

    def forget_idle(self, now: float) -> None:
        """Drop what no longer matters: full local buckets, unused leases (their credit is lost,
        which only makes the limit stricter)."""
        for kind, buckets in self._buckets.items():
            limit = self._limits[kind]
            for key, bucket in list(buckets.items()):
                bucket.wait(limit, now)
                if bucket.level >= limit.burst:  # full: the same as no bucket
                    del buckets[key]
        for leases in self._leases.values():
            idle = [
                k
                for k, lease in leases.items()
                if lease.pending is None and lease.used_at < now - _SWEEP_SECONDS
            ]
            for key in idle:
                del leases[key]

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_SECONDS)
            now = self._clock.now().timestamp()
            self.forget_idle(now)
            if self._store is not None:
                try:
                    await self._store.sweep(now)
                except Exception:
                    log.exception("rate limits: sweeping full buckets failed")


def _bucket_key(kind: str, key: str) -> str:
    """The shared bucket's name: tokens by a digest (never the credential itself), orgs by name
    when short enough."""
    if kind == "org" and len(key) <= 64:
        return f"org:{key}"
    return f"{kind}#{hashlib.sha256(key.encode()).hexdigest()[:40]}"


__all__ = [
    "BucketStore",
    "DatabaseBuckets",
    "RateLimit",
    "RateLimiter",
]
