"""The tax ledger's inputs, outputs and errors: fills as table rows, settings, lots, disposals.

Kept apart from the matching in ``core.tax.ledger`` so the import, the reports and the commands
can name them without the engine; every error names the fill it is about (``describe``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from core.models import Fill
from core.tax.periods import iso, parse_period

METHODS = ("fifo", "lifo", "hifo")
JURISDICTIONS = ("us", "de", "none")
ZERO = Decimal(0)


# --- errors -------------------------------------------------------------------------------------

class LedgerError(ValueError):
    """The fills cannot be matched as they are; ``str()`` names the fill and what to do."""

    def __init__(self, entry: "Entry", problem: str) -> None:
        self.entry, self.problem = entry, problem
        super().__init__(f"{describe(entry)}: {problem}")


class OversellError(LedgerError):
    """A fill disposes of more of an asset than the earlier fills acquired."""

    def __init__(self, entry: "Entry", problem: str, asset: str = "", quantity: Decimal = ZERO, held: Decimal = ZERO,
                 kind: str = "trade") -> None:
        super().__init__(entry, problem)
        self.asset, self.quantity, self.held, self.kind = asset, quantity, held, kind


class MissingPriceError(LedgerError):
    """A valuation needs a price that no earlier fill provides."""

    def __init__(self, entry: "Entry", problem: str, asset: str = "", why: str = "") -> None:
        super().__init__(entry, problem)
        self.asset, self.why = asset, why


class InvalidFillError(LedgerError):
    """A fill that makes no sense (bad symbol, side, amounts, fee without asset, out of bounds)."""


# --- inputs and outputs -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Entry:
    """A row of the fills table: the fill plus its row id and what it reverses (if anything)."""

    fill: Fill
    id: int | None = None
    reverses: int | None = None

    @property
    def lot_id(self) -> str:
        f = self.fill
        return f"{f.source}:{f.symbol}:{f.trade_id}"


@dataclass(frozen=True, slots=True)
class Settings:
    method: str = "fifo"
    jurisdiction: str = "us"
    long_term_after: str = "1y"
    cash: frozenset = frozenset({"USD", "USDT"})  # assets worth exactly 1 reporting unit, no lots

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {self.method!r}")
        if self.jurisdiction not in JURISDICTIONS:
            raise ValueError(f"jurisdiction: expected one of {', '.join(JURISDICTIONS)}, got {self.jurisdiction!r}")
        parse_period(self.long_term_after)


@dataclass(slots=True)
class Lot:
    lot_id: str
    asset: str
    acquired_ms: int
    quantity: Decimal  # as acquired (after any fee taken in this asset)
    cost: Decimal  # as acquired, reporting currency
    seq: int  # position in processing order: the FIFO/LIFO order and the HIFO tie-break
    remaining: Decimal = ZERO
    remaining_cost: Decimal = ZERO

    def __post_init__(self) -> None:
        self.remaining, self.remaining_cost = self.quantity, self.cost


@dataclass(frozen=True, slots=True)
class Disposal:
    """One piece of one lot leaving: a row of the disposals report."""

    asset: str
    quantity: Decimal
    proceeds: Decimal
    cost: Decimal
    acquired_ms: int
    sold_ms: int
    term: str  # "short" | "long"
    lot_id: str
    trade_id: str  # of the fill that disposed of it
    symbol: str
    source: str
    kind: str  # "trade" (the asset given in a trade) | "fee" (a third asset paid as fee)
    fill_id: int | None = None

    @property
    def gain(self) -> Decimal:
        return self.proceeds - self.cost


@dataclass(frozen=True, slots=True)
class Valuation:
    """A price taken from another fill to value a fee or a crypto quote (shown when stale)."""

    entry: Entry
    asset: str
    price: Decimal
    price_ts_ms: int

    @property
    def age_ms(self) -> int:
        return self.entry.fill.ts_ms - self.price_ts_ms


@dataclass(slots=True)
class Result:
    settings: Settings
    entries: list[Entry]  # effective fills (reversals applied) in processing order
    disposals: list[Disposal] = field(default_factory=list)
    lots: list[Lot] = field(default_factory=list)  # every lot ever opened, with what remains
    valuations: list[Valuation] = field(default_factory=list)

    def open_lots(self) -> list[Lot]:
        return [lot for lot in self.lots if lot.remaining > 0]


def describe(entry: Entry) -> str:
    f = entry.fill
    row = f"fill #{entry.id}" if entry.id is not None else "fill"
    return f"{row} ({f.source} {f.symbol} {f.side} {f.quantity} @ {f.price}, trade {f.trade_id}, {iso(f.ts_ms)})"
