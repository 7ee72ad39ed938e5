"""Domain objects shared by every layer.

Money and quantities are ``Decimal`` (exact, as the exchange sends them); indicator
math stays in float64 numpy arrays and only crosses into Decimal at the order edge.
Timestamps are UTC epoch milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum

BUY = "buy"
SELL = "sell"


@dataclass(frozen=True, slots=True)
class Market:
    """A tradable pair and the exchange's rules for orders on it."""

    symbol: str  # "BTC/USDT"
    base: str
    quote: str
    active: bool = True
    amount_step: Decimal | None = None  # LOT_SIZE stepSize
    price_tick: Decimal | None = None  # PRICE_FILTER tickSize
    min_amount: Decimal | None = None
    min_cost: Decimal | None = None  # MIN_NOTIONAL / NOTIONAL
    max_amount: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Ticker:
    symbol: str
    ts_ms: int
    last: float
    bid: float | None = None
    ask: float | None = None
    high: float | None = None
    low: float | None = None
    quote_volume: float | None = None  # 24 h volume in the quote currency


@dataclass(frozen=True, slots=True)
class OrderBook:
    symbol: str
    ts_ms: int
    bids: tuple[tuple[float, float], ...]  # (price, amount), best first
    asks: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class Opportunity:
    """One strategy's ranked signal for one pair."""

    symbol: str
    strategy: str
    side: str  # "buy" | "sell"
    score: float  # 0..100
    price: float
    stop: float
    target: float
    reason: str
    timeframe: str = "1h"


class OrderStatus(str, Enum):
    """Order life cycle; see ``ORDER_TRANSITIONS`` for the allowed moves."""

    NEW = "new"  # created and persisted by us, not yet sent
    SUBMITTED = "submitted"  # sent; exchange acknowledged (or unknown after a timeout)
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED})

ORDER_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.NEW: frozenset({OrderStatus.SUBMITTED, OrderStatus.REJECTED, OrderStatus.PARTIALLY_FILLED,
                                OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED}),
    OrderStatus.SUBMITTED: frozenset({OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELLED,
                                      OrderStatus.REJECTED, OrderStatus.EXPIRED}),
    OrderStatus.PARTIALLY_FILLED: frozenset({OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED,
                                             OrderStatus.CANCELLED, OrderStatus.EXPIRED}),
    OrderStatus.FILLED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
    OrderStatus.EXPIRED: frozenset(),
}


class InvalidTransition(RuntimeError):
    """A state change the transition table forbids: a bug or an inconsistent record, never ignored."""


@dataclass(slots=True)
class Order:
    """An order as we track it. ``client_id`` is ours, generated and persisted before sending."""

    client_id: str
    symbol: str
    side: str
    type: str  # "market" | "limit"
    amount: Decimal
    price: Decimal | None
    intent: str  # "entry" | "exit"
    position_id: int | None = None
    status: OrderStatus = OrderStatus.NEW
    exchange_id: str | None = None
    filled: Decimal = Decimal(0)
    average: Decimal | None = None
    reason: str = ""
    created_ms: int = 0
    updated_ms: int = 0

    def transition(self, new: OrderStatus, ts_ms: int) -> None:
        if new == self.status and new != OrderStatus.PARTIALLY_FILLED:
            return
        if new not in ORDER_TRANSITIONS[self.status]:
            raise InvalidTransition(f"order {self.client_id}: {self.status.value} -> {new.value} is not allowed")
        self.status = new
        self.updated_ms = ts_ms


@dataclass(frozen=True, slots=True)
class Seen:
    """What the exchange (or the lack of an answer) says about one of our orders: the live
    executor adopts it into the ``Order`` (its status moves by the transition table)."""

    status: OrderStatus
    filled: Decimal
    average: Decimal | None = None
    exchange_id: str | None = None

    @classmethod
    def of(cls, o: Order) -> "Seen":
        return cls(o.status, o.filled, o.average, o.exchange_id)


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution. Append-only in the store; the tax ledger is derived from these."""

    trade_id: str  # exchange trade id (live), generated (paper), from the file (import)
    ts_ms: int
    symbol: str
    side: str
    quantity: Decimal
    price: Decimal
    fee: Decimal = Decimal(0)
    fee_asset: str | None = None
    order_id: str | None = None  # our client order id for bot fills
    source: str = "bot"  # "bot" | "import"


class PositionStatus(str, Enum):
    """Position life cycle; see ``POSITION_TRANSITIONS``. ``open`` includes an entry still in flight."""

    OPEN = "open"
    CLOSING = "closing"  # an exit is under way (live); exits no longer evaluate it
    CLOSED = "closed"

    def __str__(self) -> str:  # formats as its value on every Python version
        return self.value


POSITION_TRANSITIONS: dict[PositionStatus, frozenset[PositionStatus]] = {
    PositionStatus.OPEN: frozenset({PositionStatus.CLOSING, PositionStatus.CLOSED}),
    PositionStatus.CLOSING: frozenset({PositionStatus.CLOSED}),
    PositionStatus.CLOSED: frozenset(),
}


@dataclass(slots=True)
class Position:
    """An open or closed long position (spot: we only buy then sell)."""

    symbol: str
    strategy: str
    amount: Decimal
    entry_price: Decimal
    stop: Decimal
    target: Decimal
    opened_ms: int
    id: int | None = None
    trail_pct: Decimal = Decimal(0)
    highest: Decimal = Decimal(0)
    entry_fees: Decimal = Decimal(0)  # in the quote currency
    score: float = 0.0
    reason: str = ""
    status: PositionStatus = PositionStatus.OPEN  # change it with ``transition``
    closed_ms: int | None = None
    exit_price: Decimal | None = None
    exit_reason: str | None = None
    exit_fees: Decimal = Decimal(0)
    pnl: Decimal | None = None  # net of all fees, in the quote currency

    def __post_init__(self) -> None:
        self.status = PositionStatus(self.status)  # a stored or legacy string becomes the enum

    def transition(self, new: PositionStatus | str) -> None:
        """Move along ``POSITION_TRANSITIONS`` (staying put is allowed); anything else raises."""
        new = PositionStatus(new)
        if new == self.status:
            return
        if new not in POSITION_TRANSITIONS[self.status]:
            raise InvalidTransition(f"position #{self.id} {self.symbol}: {self.status.value} -> {new.value} "
                                    "is not allowed")
        self.status = new

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def cost(self) -> Decimal:
        return self.amount * self.entry_price


@dataclass(slots=True)
class ScanResult:
    """What one scan cycle produced; the shape of ``scan --once --json``."""

    pairs_scanned: int
    pairs_skipped: int
    skipped: dict[str, str]
    duration_s: float
    opportunities: list[Opportunity] = field(default_factory=list)
    ts_ms: int = 0
