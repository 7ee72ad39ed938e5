"""Lot matching for the tax ledger: fills in, lots and disposals out. Pure and exact (Decimal only).

Why it looks like this:

* Deterministic. Fills are processed in ``sort_key`` order (time, then the exchange trade id
  compared numerically when it is a number, then source and symbol), never in insertion order,
  and lot ids are derived from the fill's identity (``source:symbol:trade_id``), not a row id.
  The same fills and method therefore give identical rows whatever order they were recorded in.
* Every trade is two legs valued in the reporting currency: the asset given up is disposed of,
  the asset received becomes a lot. "Cash" assets (the reporting currency and the quote the bot
  trades, e.g. USD and USDT) carry no lots. Fee rules (DESIGN.md "Tax ledger"):
  - fee in the received asset: the lot is smaller (buy fee in base) or the proceeds are
    smaller (sell fee in a cash quote);
  - fee in the given asset: more of it is given up (buy fee in a cash quote adds to the cost;
    sell fee in the base is disposed of with the rest, for no extra proceeds);
  - fee in a third asset (BNB): that asset is itself disposed of at its value at the trade's
    time, and the value is added to the cost (buy) or taken off the proceeds (sell).
  A crypto-quoted pair (ETH/BTC) is a disposal of one crypto and an acquisition of the other,
  valued through the quote's price in cash.
* A price needed for a valuation is the most recent cash-quoted fill price of that asset at or
  before the trade (e.g. BNB/USDT). With none, ``MissingPriceError`` names the fill; nothing is
  guessed.
* Selling more than is held raises ``OversellError`` naming the fill; nothing is clipped.
* Bounded: quantity, price and fee at most ``MAX_AMOUNT`` and a fill's value at most ``MAX_VALUE``
  (1e15 each), so every figure fits the 40-digit context at 1e-8 and no report can fail with
  ``decimal.InvalidOperation``; a larger fill is an ``InvalidFillError`` naming it.
* ``check`` replays the fills the same way without building lots and collects every problem instead
  of stopping at the first: the import uses it to refuse rows that would break a report.
* Money is rounded to 1e-8 (the quote's smallest unit on Binance) only where a split is
  unavoidable; splits are done by remainder, so parts always add up to the whole exactly.
* Holding periods use calendar arithmetic on UTC dates: long-term only if sold strictly after
  ``acquired + period`` (a sale on the anniversary is short-term). A period that lands on a day
  the month does not have is clamped to the month's last day: Feb 29 + 1y = Feb 28 (as BGB
  §188(3) counts, and most tax tools). Jurisdiction ``de`` uses the same test: "long" is tax-free,
  "short" taxable. ``none`` has no holding-period rule: every disposal is reported "short".
"""
from __future__ import annotations

import gc
import heapq
from bisect import bisect_right
from collections import deque
from contextlib import contextmanager
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import Iterable, Iterator

from core.models import BUY, SELL
from core.tax.periods import EPOCH_DAY, add_period
from core.tax.records import (ZERO, Disposal, Entry, InvalidFillError, LedgerError, Lot, MissingPriceError,
                              OversellError, Result, Settings, Valuation)
from core.timeframes import DAY_MS

MONEY = Decimal("1e-8")
MAX_AMOUNT = Decimal("1e15")  # quantity, price, fee of one fill
MAX_VALUE = Decimal("1e15")  # quantity x price of one fill, and its value in the reporting currency
CONTEXT = Context(prec=40, rounding=ROUND_HALF_EVEN)  # the ledger's and the reports' arithmetic


# --- holding periods ---------------------------------------------------------------------------

def term(acquired_ms: int, sold_ms: int, settings: Settings) -> str:
    """"long" only if sold on a UTC date after acquired date + period; "none" has no long term."""
    return _Terms(settings)(acquired_ms, sold_ms)


class _Terms:
    """``term`` with the threshold day cached per acquisition day (lots share days by the thousand)."""

    def __init__(self, settings: Settings) -> None:
        self.none, self.period = settings.jurisdiction == "none", settings.long_term_after
        self.cache: dict[int, int] = {}

    def __call__(self, acquired_ms: int, sold_ms: int) -> str:
        if self.none:
            return "short"
        day = acquired_ms // DAY_MS
        threshold = self.cache.get(day)
        if threshold is None:
            threshold = self.cache[day] = (add_period(EPOCH_DAY + timedelta(days=day), self.period) - EPOCH_DAY).days
        return "long" if sold_ms // DAY_MS > threshold else "short"


# --- helpers ------------------------------------------------------------------------------------

def _trade_key(trade_id: str) -> tuple:
    # Exchange trade ids are increasing integers: compare them as numbers ("9" before "10").
    return (0, int(trade_id), "") if trade_id.isdigit() else (1, 0, trade_id)


def sort_key(entry: Entry) -> tuple:
    f = entry.fill
    return (f.ts_ms, _trade_key(f.trade_id), f.source, f.symbol, f.side)


def effective(entries: Iterable[Entry]) -> list[Entry]:
    """Apply reversals: a reversal entry cancels the entry it names (and may itself be reversed).

    Reversal rows never trade. Reversals always come after what they reverse (they name an
    existing row), so walking the ids from newest to oldest settles chains in one pass.
    """
    rows = list(entries)
    cancelled: set[int] = set()
    # Unnumbered entries (built in code, not read from the table) cannot be reversed: first.
    for e in sorted(rows, key=lambda e: (e.id is not None, -(e.id or 0))):
        if e.reverses is not None and (e.id is None or e.id not in cancelled):
            cancelled.add(e.reverses)
    live = [e for e in rows if e.reverses is None and (e.id is None or e.id not in cancelled)]
    live.sort(key=sort_key)
    return live


def split_symbol(entry: Entry) -> tuple[str, str]:
    parts = entry.fill.symbol.split("/")
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise InvalidFillError(entry, "symbol: expected BASE/QUOTE such as BTC/USDT")
    return parts[0], parts[1]


def _plain(x: Decimal) -> str:
    return format(x.normalize(), "f") if x else "0"


def _q(x: Decimal) -> Decimal:
    return x.quantize(MONEY)


# --- lot books ----------------------------------------------------------------------------------

class _Book:
    """The open lots of one asset, in the order the method consumes them."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.total = ZERO
        self._fifo: deque[Lot] = deque()
        self._stack: list[Lot] = []
        self._heap: list[tuple[Decimal, int, Lot]] = []

    def add(self, lot: Lot) -> None:
        self.total += lot.quantity
        if self.method == "fifo":
            self._fifo.append(lot)
        elif self.method == "lifo":
            self._stack.append(lot)
        else:
            heapq.heappush(self._heap, (-(lot.cost / lot.quantity), lot.seq, lot))  # dearest unit cost first

    def peek(self) -> Lot:
        if self.method == "fifo":
            return self._fifo[0]
        if self.method == "lifo":
            return self._stack[-1]
        return self._heap[0][2]

    def pop(self) -> None:
        if self.method == "fifo":
            self._fifo.popleft()
        elif self.method == "lifo":
            self._stack.pop()
        else:
            heapq.heappop(self._heap)


class PriceIndex:
    """Cash price of an asset at a time, from the cash-quoted fills themselves."""

    def __init__(self, entries: list[Entry], cash: frozenset) -> None:
        self._ts: dict[str, list[int]] = {}
        self._px: dict[str, list[Decimal]] = {}
        priced: dict[str, tuple[list[int], list[Decimal]] | None] = {}  # per symbol: its base's lists, if cash-quoted
        for e in entries:  # already in processing order, so each list is sorted by time
            f = e.fill
            lists = priced.get(f.symbol, False)
            if lists is False:
                base, _, quote = f.symbol.partition("/")
                lists = priced[f.symbol] = ((self._ts.setdefault(base, []), self._px.setdefault(base, []))
                                            if quote in cash and base and base not in cash else None)
            if lists is not None and 0 < f.price <= MAX_AMOUNT:  # an out-of-bounds fill is refused, not used
                lists[0].append(f.ts_ms)
                lists[1].append(f.price)

    def at(self, asset: str, ts_ms: int) -> tuple[Decimal, int] | None:
        ts = self._ts.get(asset)
        if not ts:
            return None
        i = bisect_right(ts, ts_ms) - 1
        return None if i < 0 else (self._px[asset][i], ts[i])


# --- the ledger ---------------------------------------------------------------------------------

class _Ledger:
    def __init__(self, settings: Settings, entries: list[Entry]) -> None:
        self.s = settings
        self.result = Result(settings, entries)
        self.books: dict[str, _Book] = {}
        self.prices = PriceIndex(entries, settings.cash)
        self.term = _Terms(settings)
        self.symbols: dict[str, tuple[str, str]] = {}

    def run(self) -> Result:
        for seq, entry in enumerate(self.result.entries):
            self._fill(seq, entry)
        return self.result

    def _price(self, entry: Entry, asset: str, why: str) -> Decimal:
        if asset in self.s.cash:
            return Decimal(1)
        found = self.prices.at(asset, entry.fill.ts_ms)
        if found is None:
            quotes = "/".join(sorted(self.s.cash))
            return self._problem(MissingPriceError(
                entry, f"{why} needs the price of {asset}, but no {asset}/{quotes} fill at or before this time "
                       f"gives one; import a {asset} trade from then", asset, why), ZERO)
        price, price_ts = found
        self.result.valuations.append(Valuation(entry, asset, price, price_ts))
        return price

    def _problem(self, error: LedgerError, fallback):
        """Raise (a report), or record and carry on with ``fallback`` (``check``)."""
        raise error

    def _fill(self, seq: int, entry: Entry) -> None:
        f = entry.fill
        pair = self.symbols.get(f.symbol)
        if pair is None:
            pair = self.symbols[f.symbol] = split_symbol(entry)
        base, quote = pair
        if f.side not in (BUY, SELL):
            raise InvalidFillError(entry, "side: expected buy or sell")
        if f.quantity <= 0 or f.price <= 0 or f.fee < 0:
            raise InvalidFillError(entry, "expected quantity > 0, price > 0 and fee >= 0")
        if f.quantity > MAX_AMOUNT or f.price > MAX_AMOUNT or f.fee > MAX_AMOUNT:
            raise InvalidFillError(entry, f"expected quantity, price and fee at most {MAX_AMOUNT:,.0f}; reverse it "
                                          f"(pitrader tax reverse)")
        if f.fee > 0 and not f.fee_asset:
            raise InvalidFillError(entry, "fee_asset: a fee needs the asset it was paid in")
        gross = f.quantity * f.price  # in quote units
        if gross > MAX_VALUE:
            raise InvalidFillError(entry, f"expected quantity x price at most {MAX_VALUE:,.0f}, got {gross:.3e}; "
                                          f"reverse it (pitrader tax reverse)")
        if f.side == BUY:
            give, give_amt, get, get_amt = quote, gross, base, f.quantity
        else:
            give, give_amt, get, get_amt = base, f.quantity, quote, gross
        fee_asset, fee_value, fee_disposal = f.fee_asset, ZERO, None
        if f.fee > 0:
            if fee_asset == get:
                get_amt -= f.fee
            elif fee_asset == give:
                give_amt += f.fee
            else:
                fee_value = _q(f.fee * self._price(entry, fee_asset, f"the fee of {f.fee} {fee_asset}"))
                if fee_asset not in self.s.cash:
                    fee_disposal = (fee_asset, f.fee, fee_value)
        if get_amt <= 0:
            raise InvalidFillError(entry, f"the fee leaves nothing of {get} received")
        if f.side == BUY:  # value what was given; the fee's value adds to the cost
            proceeds = _q(give_amt * self._price(entry, quote, f"paying with {quote}")) if quote not in self.s.cash \
                else _q(give_amt)
            cost = proceeds + fee_value
        else:  # value what was received; the fee's value comes off the proceeds
            cost = _q(get_amt * self._price(entry, quote, f"receiving {quote}")) if quote not in self.s.cash \
                else _q(get_amt)
            proceeds = cost - fee_value
        if cost > MAX_VALUE or fee_value > MAX_VALUE:
            raise InvalidFillError(entry, f"expected a value at most {MAX_VALUE:,.0f} in the reporting currency, got "
                                          f"{max(cost, fee_value):.3e}; reverse it (pitrader tax reverse)")
        if give not in self.s.cash:
            self._dispose(entry, give, give_amt, proceeds, "trade")
        if fee_disposal is not None:
            self._dispose(entry, *fee_disposal, "fee")
        if get not in self.s.cash:
            self._acquire(entry, seq, get, get_amt, cost)

    def _acquire(self, entry: Entry, seq: int, asset: str, qty: Decimal, cost: Decimal) -> None:
        lot = Lot(entry.lot_id, asset, entry.fill.ts_ms, qty, cost, seq)
        self.result.lots.append(lot)
        book = self.books.get(asset)
        if book is None:
            book = self.books[asset] = _Book(self.s.method)
        book.add(lot)

    def _oversold(self, entry: Entry, asset: str, qty: Decimal, held: Decimal, kind: str) -> OversellError:
        verb = "pays a fee of" if kind == "fee" else "pays" if entry.fill.side == BUY else "sells"
        return OversellError(entry, f"{verb} {_plain(qty)} {asset} but only {_plain(held)} {asset} is held at that "
                                    f"time; import the fills that acquired it, or reverse this one (pitrader tax "
                                    f"reverse)", asset, qty, held, kind)

    def _dispose(self, entry: Entry, asset: str, qty: Decimal, proceeds: Decimal, kind: str) -> None:
        book = self.books.get(asset)
        held = book.total if book else ZERO
        if held < qty:
            raise self._oversold(entry, asset, qty, held, kind)
        f = entry.fill
        left, allocated = qty, ZERO
        while left > 0:
            lot = book.peek()
            take = min(left, lot.remaining)
            if take == lot.remaining:
                cost = lot.remaining_cost
                lot.remaining, lot.remaining_cost = ZERO, ZERO
                book.pop()
            else:
                cost = _q(lot.remaining_cost * take / lot.remaining)
                lot.remaining -= take
                lot.remaining_cost -= cost
            left -= take
            piece = proceeds - allocated if left == 0 else _q(proceeds * take / qty)
            allocated += piece
            self.result.disposals.append(Disposal(
                asset, take, piece, cost, lot.acquired_ms, f.ts_ms, self.term(lot.acquired_ms, f.ts_ms),
                lot.lot_id, f.trade_id, f.symbol, f.source, kind, entry.id))
        book.total -= qty


@contextmanager
def bulk() -> Iterator[None]:
    """Pause the cyclic GC while building ~10^5 small objects that hold no cycles (it would rescan
    them over and over: ~15 % of an import or a report)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class _Checker(_Ledger):
    """The same replay with running totals instead of lots, recording problems instead of raising:
    what ``compute`` would refuse, found in one pass (a few times cheaper than matching lots)."""

    def __init__(self, settings: Settings, entries: list[Entry]) -> None:
        super().__init__(settings, entries)
        self.held: dict[str, Decimal] = {}
        self.errors: list[LedgerError] = []

    def run(self) -> Result:
        for seq, entry in enumerate(self.result.entries):
            try:
                self._fill(seq, entry)
            except LedgerError as exc:  # an invalid fill: it does not trade at all
                self.errors.append(exc)
        return self.result

    def _problem(self, error: LedgerError, fallback):
        self.errors.append(error)
        return fallback

    def _acquire(self, entry: Entry, seq: int, asset: str, qty: Decimal, cost: Decimal) -> None:
        self.held[asset] = self.held.get(asset, ZERO) + qty

    def _dispose(self, entry: Entry, asset: str, qty: Decimal, proceeds: Decimal, kind: str) -> None:
        held = self.held.get(asset, ZERO)
        if held < qty:  # record it and go on as if what was held were sold
            self.errors.append(self._oversold(entry, asset, qty, held, kind))
            qty = held
        self.held[asset] = held - qty


def compute(entries: Iterable[Entry], settings: Settings | None = None) -> Result:
    """Match every fill into lots and disposals (all years); raises ``LedgerError`` on bad data."""
    settings = settings or Settings()
    with bulk(), localcontext(CONTEXT):
        return _Ledger(settings, effective(entries)).run()


def check(entries: Iterable[Entry], settings: Settings | None = None) -> list[LedgerError]:
    """Every problem ``compute`` could stop at, in processing order ([] when every report can be made).

    After a problem the replay goes on as if the fill had sold only what was held (and a missing
    price were 0), so one bad fill does not hide the others."""
    settings = settings or Settings()
    with bulk(), localcontext(CONTEXT):
        checker = _Checker(settings, effective(entries))
        checker.run()
        return checker.errors
