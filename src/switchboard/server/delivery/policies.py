"""What the engine needs to know about a queue row's window and throughput class, cached.

A row names its window (`class:<id>`: the sender class's `delivery_window`; `hours:8-20`: a
communication type's ANYDAY hours; "" none) and its throughput class (`class_id`). Sender classes
are reference data that change rarely (Admin RPCs), so they are re-read at most every
`ttl_seconds`, never per message. The classes belong to messaging: it hands the engine a loader
(`ClassLoader`), so delivery never reads a domain's tables.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from switchboard.server.delivery.throughput import Limits
from switchboard.server.delivery.windows import DeliveryWindow

log = logging.getLogger("switchboard.delivery")
_UNLIMITED = Limits()


@dataclass(frozen=True)
class ClassPolicy:
    """A sender class as the engine sees it: its delivery window and its throughput caps."""

    class_id: str
    delivery_window: str  # "" = always open
    peak: float = 0.0  # messages per second per country; 0 = unlimited
    peak_total: float = 0.0
    daily: int = 0


ClassLoader = Callable[[], Awaitable[Sequence[ClassPolicy]]]


def hours_window(opens: int, closes: int) -> str:
    """The `window` value of a queue row for ANYDAY hours."""
    return f"hours:{opens}-{closes}"


class Policies:
    def __init__(self, load_classes: ClassLoader, *, ttl_seconds: float = 30.0) -> None:
        self._load_classes = load_classes
        self._ttl = ttl_seconds
        self._loaded_at = -1e18
        self._windows: dict[str, DeliveryWindow | None] = {}
        self._limits: dict[str, Limits] = {}
        self._asked_unknown: set[str] = set()
        self._missing: set[str] = set()

    async def refresh(self, *, force: bool = False) -> None:
        stale = bool(self._asked_unknown)
        if not force and not stale and time.monotonic() - self._loaded_at < self._ttl:
            return
        self._missing |= self._asked_unknown  # asked and reloaded: really not there
        self._asked_unknown = set()
        self.load(await self._load_classes())

    def load(self, classes: Sequence[ClassPolicy]) -> None:
        windows: dict[str, DeliveryWindow | None] = {}
        limits: dict[str, Limits] = {}
        for policy in classes:
            windows[f"class:{policy.class_id}"] = DeliveryWindow.parse(
                policy.delivery_window or None
            )
            limits[policy.class_id] = Limits(
                peak=policy.peak, peak_total=policy.peak_total, daily=policy.daily
            )
        for class_id in self._missing - set(limits):
            log.warning("sender class %r is unknown: its messages go unrestricted", class_id)
        self._missing &= self._missing - set(limits)
        self._windows, self._limits = windows, limits
        self._loaded_at = time.monotonic()

    def known(self, row: Mapping[str, Any]) -> bool:
        """Whether the row's class is loaded. A class the cache has not seen yet (created since
        the last load, or seeded after start) makes the next `refresh` reload; a class still
        unknown after that is treated as unrestricted (and logged), so no message waits forever
        on reference data that is gone."""
        class_id = row["class_id"]
        if not class_id or class_id in self._limits or class_id in self._missing:
            return True
        self._asked_unknown.add(class_id)
        return False

    def window(self, key: str) -> DeliveryWindow | None:
        if not key:
            return None
        if key.startswith("hours:"):
            opens, _, closes = key[6:].partition("-")
            return DeliveryWindow.every_day(int(opens), int(closes))
        return self._windows.get(key)

    def limits(self, class_id: str) -> Limits:
        return self._limits.get(class_id, _UNLIMITED) if class_id else _UNLIMITED


__all__ = ["ClassLoader", "ClassPolicy", "Policies", "hours_window"]
