"""Throughput classes: how fast one sender class may send to one country (docs/rest-families.md).

Three limits per message, from its sender class:
- `country_peak_throughput`: messages/second per (customer, class, destination country);
- `country_peak_total_throughput`: messages/second per (sender address, destination country),
  all customers together (a shared short code has one carrier-side rate);
- `country_daily_throughput`: messages per UTC day per (customer, class, destination country).

Excess waits: `reserve` answers how long to wait and takes nothing unless every limit has room,
so a message never holds a token it cannot use. Buckets start full with one second's worth
(the burst), refill continuously, and live in the process (one dispatcher per database today;
the daily counts are also persisted by the engine so a restart does not reset them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Limits:
    """A class's limits for one country; 0 means unlimited."""

    peak: float = 0.0
    peak_total: float = 0.0
    daily: int = 0

    @property
    def unlimited(self) -> bool:
        return not (self.peak or self.peak_total or self.daily)


class TokenBucket:
    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)  # one second's burst
        self.tokens = self.capacity
        self.updated = now

    def wait(self, now: float) -> float:
        """Seconds until a token is available (0: one is)."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def take(self) -> None:
        self.tokens -= 1.0


def daily_key(org_id: str, class_id: str, country: str) -> str:
    return f"{org_id}|{class_id}|{country}"


class Throughput:
    def __init__(self) -> None:
        self._peak: dict[tuple[str, str, str], TokenBucket] = {}
        self._total: dict[tuple[str, str], TokenBucket] = {}
        self._daily: dict[str, int] = {}
        self._day = ""
        self.used_today: dict[str, int] = {}  # reserved since the last `drain_used` (to persist)

    def load_daily(self, day: str, counts: dict[str, int]) -> None:
        """Counts already persisted for `day` (YYYY-MM-DD, UTC), at start."""
        self._day = day
        self._daily = dict(counts)

    def reserve(
        self,
        limits: Limits,
        *,
        org_id: str,
        class_id: str,
        sender: str,
        country: str,
        now: datetime,
    ) -> float:
        """Seconds this message must wait; 0 means it may go now (and its tokens are taken)."""
        if limits.unlimited:
            return 0.0
        instant = now.timestamp()
        waits = []
        peak = total = None
        if limits.peak:
            key = (org_id, class_id, country)
            peak = self._peak.get(key)
            if peak is None or peak.rate != limits.peak:
                peak = self._peak[key] = TokenBucket(limits.peak, instant)
            waits.append(peak.wait(instant))
        if limits.peak_total:
            address = (sender, country)
            total = self._total.get(address)
            if total is None or total.rate != limits.peak_total:
                total = self._total[address] = TokenBucket(limits.peak_total, instant)
            waits.append(total.wait(instant))
        day_key = daily_key(org_id, class_id, country)
        if limits.daily:
            today = now.date().isoformat()
            if today != self._day:
                self._day, self._daily = today, {}
            if self._daily.get(day_key, 0) >= limits.daily:
                midnight = datetime.combine(now.date() + timedelta(days=1), now.timetz())
                midnight = midnight.replace(hour=0, minute=0, second=0, microsecond=0)
                waits.append((midnight - now).total_seconds())
        wait = max(waits, default=0.0)
        if wait > 0:
            return wait
        if peak is not None:
            peak.take()
        if total is not None:
            total.take()
        if limits.daily:
            self._daily[day_key] = self._daily.get(day_key, 0) + 1
            self.used_today[day_key] = self.used_today.get(day_key, 0) + 1
        return 0.0

    def drain_used(self) -> tuple[str, dict[str, int]]:
        """(day, counts reserved since the last call): what the engine adds to the stored counts."""
        used, self.used_today = self.used_today, {}
        return self._day, used


__all__ = ["Limits", "Throughput", "TokenBucket", "daily_key"]
