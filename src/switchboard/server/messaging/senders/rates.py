"""Message prices from the rate table in the reference data file (`rates`).

A message costs its channel's rate for its destination country (`OTHER` for countries not
listed) times its parts: SMS segments as the handset bills them (GSM-7 160/153, UCS-2 70/67),
one for email and WhatsApp. The currency is the table's (`USD`). The price is set when the
message is handed to its provider (SENT); messages that never go out cost nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from switchboard.server.telephony.encoding import segment_count

_DATA = Path(__file__).parent / "data" / "reference_data.json"
OTHER = "OTHER"


class Rates:
    def __init__(self, table: Mapping[str, Any]) -> None:
        self.currency = str(table.get("currency", "USD"))
        self._table = {
            channel: {country.upper(): float(price) for country, price in prices.items()}
            for channel, prices in table.items()
            if isinstance(prices, Mapping)
        }

    @classmethod
    def from_reference_data(cls, path: Path = _DATA) -> Rates:
        return cls(json.loads(path.read_text())["rates"])

    def rate(self, channel: str, country: str, route: str = "") -> float:
        """One part to `country`: the route's own table when it has one (a gateway id, e.g. a
        cheaper SMPP route), else the channel's; `OTHER` for unlisted countries; 0 unpriced."""
        prices = self._table.get(route) or self._table.get(channel, {})
        return prices.get(country.upper(), prices.get(OTHER, 0.0))

    def price(self, channel: str, country: str, body: str, route: str = "") -> float:
        """What one message of `body` to `country` costs on `channel` via `route`."""
        parts = segment_count(body) if channel == "sms" else 1
        return round(self.rate(channel, country, route) * parts, 6)


__all__ = ["Rates"]
