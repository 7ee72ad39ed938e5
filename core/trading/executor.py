"""Executor: turns approvals into positions and exits into sells; paper and live share this shape.

Both back ends keep the same durable trail in the store: an order row (with our client id) is
written before anything is sent, and each fill lands in the append-only ``fills`` table in the
same transaction as the order's new state and the position it changes. A position's amount,
prices, fees and PnL are always re-derived from its fills, so a restart (or a fill seen twice)
cannot make them drift. The fills of each open position are also kept in memory, in step with
the store (updated only after a commit), so recording a fill never re-reads the history.
A transaction that fails leaves the in-memory position and order as the store has them.
"""
from __future__ import annotations

import bisect
import logging
import operator
from dataclasses import dataclass, fields as dc_fields, replace
from decimal import Decimal
from typing import Callable, Iterable, Protocol

from core.clock import Clock
from core.config import Config
from core.exchange.gateway import ExchangeGateway, GatewayError
from core.events import Event
from core.log import audit
from core.models import BUY, SELL, Fill, Market, Opportunity, Order, OrderBook, Position, PositionStatus
from core.trading.portfolio import Portfolio, to_decimal
from core.trading.risk import Approval
from core.trading.rules import Refusal, at_step, conform_order, fill_text
from core.store.state import Store

log = logging.getLogger(__name__)

ZERO = Decimal(0)
POSITION_FIELDS = tuple(f.name for f in dc_fields(Position) if f.name != "highest")  # a high only ever rises
ORDER_FIELDS = tuple(f.name for f in dc_fields(Order))
_position_state = operator.attrgetter(*POSITION_FIELDS)


class Executor(Protocol):
    async def start(self) -> None: ...

    async def portfolio(self, prices: dict[str, float]) -> Portfolio: ...

    async def open_position(self, opp: Opportunity, approval: Approval,
                            book: OrderBook | None = None) -> Position | None: ...

    async def close_position(self, pos: Position, reason: str, price: float) -> None: ...

    async def poll(self) -> None: ...

    @property
    def positions(self) -> list[Position]: ...


def client_order_id(tag: str, position_id: int, intent: str, attempt: int) -> str:
    """Ours, deterministic and unique per attempt: ``pt<tag>-<position>-<e|x><attempt>``.

    Binance accepts ``^[a-zA-Z0-9-_]{1,36}$``; the tag (random per database, persisted) keeps a
    fresh database from reusing the ids of an old one on the same account.
    """
    cid = f"pt{tag}-{position_id}-{'e' if intent == 'entry' else 'x'}{attempt}"
    assert len(cid) <= 36, cid
    return cid


# --- position accounting from fills --------------------------------------------------------------

@dataclass
class Settlement:
    """A position's numbers derived from its fills (entry buys, exit sells)."""

    bought: Decimal = ZERO  # gross base bought
    spent: Decimal = ZERO  # sum qty * price of the buys
    sold: Decimal = ZERO
    received: Decimal = ZERO
    entry_fees: Decimal = ZERO  # quote value of every entry fee
    exit_fees: Decimal = ZERO
    cash_fees_in: Decimal = ZERO  # fees actually paid out of the quote (or a third asset) on entry
    cash_fees_out: Decimal = ZERO
    base_fees: Decimal = ZERO  # fees taken out of the bought base amount
    last_ts: int = 0

    @property
    def held(self) -> Decimal:
        """Base amount the position has on the account."""
        return self.bought - self.base_fees

    @property
    def remaining(self) -> Decimal:
        return self.held - self.sold

    @property
    def pnl(self) -> Decimal:
        """Realised cash PnL in the quote (unsold dust is not counted)."""
        return self.received - self.cash_fees_out - self.spent - self.cash_fees_in


def settle(fills: Iterable[tuple[str, Fill]], base: str, quote: str,
           prices: dict[str, Decimal] | None = None) -> Settlement:
    """Sum ``(intent, fill)`` pairs; fees in a third asset are valued at ``prices[ASSET/QUOTE]``."""
    s = Settlement()
    for intent, f in fills:
        value = f.quantity * f.price
        fee_asset = f.fee_asset or quote
        if fee_asset == quote:
            fee_q, cash_fee, base_fee = f.fee, f.fee, ZERO
        elif fee_asset == base:
            fee_q, cash_fee, base_fee = f.fee * f.price, ZERO, f.fee
        else:
            px = (prices or {}).get(f"{fee_asset}/{quote}")
            fee_q = f.fee * px if px is not None else ZERO
            cash_fee, base_fee = fee_q, ZERO
        if f.side == BUY:
            s.bought += f.quantity
            s.spent += value
            s.entry_fees += fee_q
            s.cash_fees_in += cash_fee
            s.base_fees += base_fee
        else:
            s.sold += f.quantity + base_fee
            s.received += value
            s.exit_fees += fee_q
            s.cash_fees_out += cash_fee
        s.last_ts = max(s.last_ts, f.ts_ms)
    return s


def apply_settlement(pos: Position, s: Settlement) -> None:
    if s.bought > 0:
        pos.amount = s.held
        pos.entry_price = s.spent / s.bought
        pos.entry_fees = s.entry_fees
    if s.sold > 0:
        pos.exit_price = s.received / s.sold
        pos.exit_fees = s.exit_fees


def sellable(market: Market, amount: Decimal, price: Decimal) -> Decimal | Refusal:
    """The amount a sell of ``amount`` would really be after exchange rules, or why none is possible."""
    if amount <= 0:
        return Refusal("nothing left to sell")
    v = conform_order(market, SELL, amount, price)
    return v if isinstance(v, Refusal) else v.amount


def walk(levels: Iterable[tuple[float, float]], amount: Decimal) -> Decimal | None:
    """Average price of taking ``amount`` from book levels (best first); None if they run out."""
    left, cost = amount, ZERO
    for p, a in levels:
        p, a = to_decimal(p), to_decimal(a)
        if p <= 0 or a <= 0:
            continue
        take = min(left, a)
        cost += take * p
        left -= take
        if left <= 0:
            return cost / amount
    return None


# --- shared base ----------------------------------------------------------------------------------

class BaseExecutor:
    """In-memory view of the open positions over the store, shared by both back ends."""

    mode = "base"

    def __init__(self, cfg: Config, store: Store, gateway: ExchangeGateway, clock: Clock) -> None:
        self.cfg = cfg
        self.store = store
        self.gateway = gateway
        self.clock = clock
        self.quote = cfg.universe.quote
        self.markets: dict[str, Market] = {}
        self.prices: dict[str, Decimal] = {}
        self._priced: dict[str, float] = {}  # the float each mark was converted from
        self._open: dict[int, Position] = {}
        self._remaining: dict[int, Decimal] = {}
        self._saved_high: dict[int, Decimal] = {}
        # fills of each open position as the store has them: (ts_ms, row id, order intent, fill), sorted
        self._fills: dict[int, list[tuple[int, int, str, Fill]]] = {}

    @property
    def positions(self) -> list[Position]:
        """Open positions (incl. ones still being entered or closed): the objects exits should see."""
        return list(self._open.values())

    @property
    def valuation_ok(self) -> bool:
        """Whether ``portfolio()`` rests on a current balance; when not, its equity must not
        raise halts or size entries (a failed balance fetch is not a 90 % loss)."""
        return True

    def update_markets(self, markets: dict[str, Market]) -> None:
        """The exchange's current rules (the gateway refreshes them hourly)."""
        if markets:
            self.markets = markets

    def update_config(self, cfg: Config) -> None:
        """A reload: order type, timeouts, fees apply to orders from now on; open ones keep theirs."""
        self.cfg = cfg

    def market(self, symbol: str) -> Market:
        m = self.markets.get(symbol)
        if m is None:
            base, quote = symbol.split("/")
            m = Market(symbol, base, quote)
        return m

    async def _load_positions(self) -> None:
        try:
            self.markets = await self.gateway.load_markets()
        except GatewayError as exc:
            if self.mode == "live":
                raise
            log.warning("executor: markets unavailable (%s); orders use no precision limits", exc)
        self._open = {p.id: p for p in await self.store.positions("open")}
        for p in self._open.values():
            self._fills[p.id] = await self._stored_fills(p.id)
            s = await self._settlement(p)
            self._remaining[p.id] = s.remaining if s.bought > 0 else ZERO
            self._saved_high[p.id] = p.highest

    async def _stored_fills(self, position_id: int, conn=None) -> list[tuple[int, int, str, Fill]]:
        return [(f.ts_ms, fid, intent, f) for fid, intent, f in await self.store.position_fills(position_id, conn)]

    async def _position_fills(self, position_id: int, conn=None) -> list[tuple[str, Fill]]:
        """``(intent, fill)`` of a position by time: from memory for an open one, else from the store."""
        rows = self._fills.get(position_id)
        if rows is None:
            rows = await self._stored_fills(position_id, conn)
        return [(intent, f) for _, _, intent, f in rows]

    async def _settlement(self, pos: Position) -> Settlement:
        fills = await self._position_fills(pos.id)
        await self._price_fee_assets(f for _, f in fills)
        return settle(fills, pos.base, self.quote, self.prices)

    async def _price_fee_assets(self, fills: Iterable[Fill]) -> None:
        """Fees paid in a third asset (BNB) are valued at its price: fetch the ones this cycle's
        marks lack, or the fee would count as zero in PnL and the daily-loss check."""
        wanted = {f"{f.fee_asset}/{self.quote}" for f in fills if f.fee and f.fee_asset
                  and f.fee_asset not in (self.quote, f.symbol.split("/")[0])} - set(self.prices)
        if not wanted:
            return
        try:
            tickers = await self.gateway.fetch_tickers(sorted(wanted))
        except GatewayError as exc:
            tickers = {}
            log.warning("fee asset prices unavailable (%s)", exc)
        self.update_marks({sym: t.last for sym, t in tickers.items()})
        for sym in sorted(wanted - set(self.prices)):
            log.warning("no price for %s: fees paid in %s count as 0 until one is known", sym, sym.split("/")[0])

    async def _orders_of(self, position_id: int) -> list[Order]:
        return await self.store.orders_of(position_id)

    async def record(self, order: Order | Callable[[Position], Order], pos: Position,
                     fills: Iterable[Fill] | Callable[[Order], Iterable[Fill]] = (), detail: str = "",
                     close_reason: str | None = None) -> tuple[Order, list[Fill]]:
        """One durable transaction: new fills, the order's state, the position re-derived from its fills.

        A new position (no id yet) is inserted first and ``order`` may then be a function of it (the
        client id carries the position id). ``close_reason`` closes the position in the same
        transaction. Returns the order and the fills that were new.
        """
        now = self.clock.now_ms()
        new: list[Fill] = []
        inserted = pos.id is None
        before = _position_state(pos)
        if not callable(fills):
            fills = list(fills)
            await self._price_fee_assets(fills)  # before the transaction: no network call holding the lock
        try:
            async with self.store.transaction() as conn:
                if inserted:
                    await self.store.save_position(pos, conn)
                if callable(order):
                    order = order(pos)
                order.position_id = pos.id
                cached = [] if inserted else self._fills.get(pos.id)
                rows = list(cached) if cached is not None else await self._stored_fills(pos.id, conn)
                for f in (fills(order) if callable(fills) else fills):
                    f = replace(f, order_id=order.client_id)
                    fid = await self.store.add_fill(f, now, conn)
                    if fid is not None:
                        new.append(f)
                        bisect.insort(rows, (f.ts_ms, fid, order.intent, f), key=lambda r: (r[0], r[1]))
                await self.store.save_order(order, detail, conn)
                s = settle(((i, f) for _, _, i, f in rows), pos.base, self.quote, self.prices)
                apply_settlement(pos, s)
                if close_reason is not None:
                    self._close_fields(pos, s, close_reason, now)
                await self.store.save_position(pos, conn)
                if new and self.store.outbox_enabled:  # its message commits with the fill, or neither does
                    await self.store.add_event(self._fill_event(order, pos, new, now), conn)
        except BaseException:
            if inserted:
                pos.id = None  # the insert was rolled back with everything else
            else:
                await self._follow_store(pos, order if isinstance(order, Order) else None, before)
            raise
        self._track(pos, s, rows)
        self.on_fills(order, new)
        for f in new:
            audit("fill", mode=self.mode, trade_id=f.trade_id, symbol=f.symbol, side=f.side, quantity=f.quantity,
                  price=f.price, fee=f.fee, fee_asset=f.fee_asset, order_id=f.order_id, ts_ms=f.ts_ms)
            log.info("fill %s (order %s)", fill_text(self.market(f.symbol), f), f.order_id)
        audit("order", mode=self.mode, client_id=order.client_id, symbol=order.symbol, side=order.side,
              type=order.type, amount=order.amount, price=order.price, status=order.status.value,
              filled=order.filled, intent=order.intent, position_id=pos.id, detail=detail)
        return order, new

    def _fill_event(self, order: Order, pos: Position, new: list[Fill], now: int) -> Event:
        """The notification for a batch of fills: what, how much, at what price, and for an exit the PnL."""
        market = self.market(pos.symbol)
        qty = sum((f.quantity for f in new), ZERO)
        avg = sum((f.quantity * f.price for f in new), ZERO) / qty if qty else ZERO
        text = (f"{'BUY' if order.side == BUY else 'SELL'} {at_step(qty, market.amount_step)} {pos.symbol} "
                f"@ {at_step(avg, market.price_tick)}")
        data = {"symbol": pos.symbol, "side": order.side, "quantity": str(qty), "price": str(avg),
                "position_id": pos.id, "order_id": order.client_id, "mode": self.mode}
        if order.intent == "entry":
            text += f" ({pos.strategy} {pos.score:.0f}): {pos.reason}" if pos.reason else f" ({pos.strategy})"
            kind = "entry_fill"
        else:
            kind = "exit_fill"
            reason = pos.exit_reason or order.reason or ""
            text += f": {reason}" if reason else ""
            if pos.status == PositionStatus.CLOSED and pos.pnl is not None:
                cost = pos.entry_price * (pos.amount or qty)
                pct = f" ({float(pos.pnl / cost) * 100:+.2f} %)" if cost else ""
                text += f"\nPnL {'+' if pos.pnl >= 0 else ''}{at_step(pos.pnl, market.price_tick, 2)} {self.quote}{pct}"
                data.update(pnl=str(pos.pnl), exit_reason=reason)
        if self.mode != "live":
            text = f"[{self.mode}] " + text
        return Event(kind, text, now, key=f"{order.client_id}:{new[-1].trade_id}", data=data)

    async def _follow_store(self, pos: Position, order: Order | None, before: tuple) -> None:
        """After a transaction that did not land: the in-memory position and order take back what the
        store holds (callers may have changed them before ``record``), or, if the store cannot be
        read either, the position what it was when ``record`` began."""
        try:
            stored = await self.store.position(pos.id)
            stored_order = await self.store.get_order(order.client_id) if order is not None else None
        except Exception as exc:  # noqa: BLE001 - the store is failing: the snapshot is all there is
            log.warning("%s #%s: store unreadable after a failed write (%s); in-memory state reset to before it",
                        pos.symbol, pos.id, exc)
            stored, stored_order = None, None
        values = _position_state(stored) if stored is not None else before
        for name, value in zip(POSITION_FIELDS, values):
            setattr(pos, name, value)
        if stored_order is not None:
            for name in ORDER_FIELDS:
                setattr(order, name, getattr(stored_order, name))

    def on_fills(self, order: Order, fills: list[Fill]) -> None:
        """Called once per durable batch of new fills (the wallet follows them)."""

    def _close_fields(self, pos: Position, s: Settlement, reason: str, now: int) -> None:
        pos.transition(PositionStatus.CLOSED)
        pos.closed_ms = now  # our clock, like opened_ms (exchange trade times may be skewed)
        pos.exit_reason = pos.exit_reason or reason
        if s.sold <= 0 and s.bought <= 0:
            pos.amount = ZERO  # an entry that never filled: not a trade
        pos.pnl = s.pnl if s.bought > 0 else ZERO

    def _track(self, pos: Position, s: Settlement, rows: list[tuple[int, int, str, Fill]] | None = None) -> None:
        """After a commit: the in-memory view follows what was written (``rows``: the position's fills)."""
        if pos.status == PositionStatus.CLOSED:
            self._open.pop(pos.id, None)
            self._remaining.pop(pos.id, None)
            self._saved_high.pop(pos.id, None)
            self._fills.pop(pos.id, None)
        else:
            self._open[pos.id] = pos
            self._remaining[pos.id] = s.remaining if s.bought > 0 else ZERO
            self._saved_high[pos.id] = pos.highest
            if rows is not None:
                self._fills[pos.id] = rows

    async def close_unfilled(self, pos: Position, reason: str, price: Decimal, why: str) -> None:
        """Close a trade without a (further) fill: an unsellable remainder below the exchange's
        minimums, or base that is no longer on the account. What is left is valued at ``price``."""
        s = await self._settlement(pos)
        log.warning("%s #%s: %s; position closed (%s %s left, valued at %s)", pos.symbol, pos.id, why,
                    s.remaining if s.bought > 0 else ZERO, pos.base, price)

        def close(p: Position) -> None:
            apply_settlement(p, s)
            self._close_fields(p, s, reason, self.clock.now_ms())
            if s.bought > 0:
                p.pnl = s.pnl + max(s.remaining, ZERO) * price
                if s.sold <= 0:
                    p.exit_price = price

        await self.save_closed(pos, s, close)

    async def save_closed(self, pos: Position, s: Settlement, close: Callable[[Position], None]) -> None:
        """Close ``pos`` without a new fill: ``close`` sets its fields on a copy, which replaces the
        in-memory position only once the store has it."""
        new = replace(pos)
        close(new)
        try:
            await self.store.save_position(new)
        except BaseException:
            await self._follow_store(pos, None, _position_state(pos))  # e.g. a ``closing`` set before
            raise
        for name in POSITION_FIELDS:
            setattr(pos, name, getattr(new, name))
        self._track(pos, s)

    def update_marks(self, prices: dict[str, float]) -> dict[str, Decimal]:
        # convert only what changed (a set difference in C): a cycle passes the same prices several times
        for sym, p in prices.items() - self._priced.items():
            self._priced[sym] = p
            if p is not None and p > 0:
                self.prices[sym] = to_decimal(p)
        for pos in self._open.values():
            px = self.prices.get(pos.symbol)
            if px is not None and pos.amount > 0 and px > pos.highest:
                pos.highest = px
        return self.prices

    async def persist_highs(self) -> None:
        """Trailing stops survive a restart: save raised highs (one small transaction when any moved)."""
        moved = [p for p in self._open.values() if p.highest != self._saved_high.get(p.id)]
        if not moved:
            return
        await self.store.save_highs([(p.id, p.highest) for p in moved])
        for p in moved:
            self._saved_high[p.id] = p.highest

    def own(self, pos: Position) -> Position:
        """The executor's live object for ``pos`` (the engine may pass a fresh copy from the store)."""
        mine = self._open.get(pos.id)
        if mine is not None and pos.highest > mine.highest:
            mine.highest = pos.highest
        return mine or pos
