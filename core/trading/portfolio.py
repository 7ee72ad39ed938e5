"""What the account holds right now, marked at given prices: what the risk gate sizes against."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterable, Mapping

from core.models import Position

ZERO = Decimal(0)


def to_decimal(x: float | int | str | Decimal) -> Decimal:
    """Floats (indicator prices) cross into money through their shortest repr, never binary noise."""
    return x if isinstance(x, Decimal) else Decimal(str(x))


@dataclass
class Portfolio:
    cash: Decimal  # free quote balance (not reserved by open buy orders)
    equity: Decimal  # cash + reserved + open positions marked at ``prices``
    positions: list[Position]  # open (status open|closing), incl. entries still waiting for fills
    prices: dict[str, Decimal]
    pending: dict[str, Decimal] = field(default_factory=dict)  # quote reserved by unfilled entry orders

    def exposure(self, base: str) -> Decimal:
        """Quote value in one base asset: held positions plus what open entry orders will buy."""
        return asset_exposure(self.positions, self.prices, self.pending).get(base, ZERO)

    def has_position(self, symbol: str) -> bool:
        return any(p.symbol == symbol for p in self.positions)


def mark(pos: Position, prices: Mapping[str, Decimal]) -> Decimal:
    """A position's value at the last known price (entry price when none is known yet)."""
    return pos.amount * prices.get(pos.symbol, pos.entry_price)


def asset_exposure(positions: Iterable[Position], prices: Mapping[str, Decimal],
                   pending: Mapping[str, Decimal] | None = None) -> dict[str, Decimal]:
    out: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for p in positions:
        out[p.base] += mark(p, prices)
    for symbol, value in (pending or {}).items():
        out[symbol.split("/")[0]] += value
    return dict(out)


def build(cash_total: Decimal, reserved: Mapping[str, Decimal], positions: list[Position],
          prices: Mapping[str, Decimal]) -> Portfolio:
    """``cash_total`` includes the quote ``reserved`` (per symbol) by open entry orders."""
    held = sum((mark(p, prices) for p in positions), ZERO)
    reserved_total = sum(reserved.values(), ZERO)
    return Portfolio(cash=cash_total - reserved_total, equity=cash_total + held, positions=list(positions),
                     prices=dict(prices), pending=dict(reserved))
