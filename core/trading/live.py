"""Live trading: real orders through the exchange gateway, never sent twice, never lost.

Every order gets our own client id (``pt<tag>-<position>-<e|x><attempt>``) and is written to the
store as ``new`` *before* it is sent. Whatever happens next (a reply, an error, a timeout, the
process killed) the order is found again by that id: an answer that is not a clear yes or no
leaves it ``submitted`` with no exchange id, and it is looked up before anything else is done for
that position. A client id is sent at most once: when the exchange has still not heard of an
order ``UNKNOWN_WINDOW_MS`` after it was created, Binance can no longer accept that request
(ccxt signs with ``recvWindow`` 10 s), so the order is marked expired and a later attempt gets
a new id. Fills come from ``fetch_my_trades`` and are recorded once by trade id; a position's
amount is what its fills bought (net of fees taken in the base asset).

``start()`` reconciles the store with the exchange (``core.trading.reconcile``) before anything
else is done.
"""
from __future__ import annotations

import logging
import time
from decimal import Decimal

from core.trading.executor import BaseExecutor, client_order_id, sellable
from core.trading.protection import Protection
from core.trading.reconcile import FLAGGED_KEY, TAG_KEY, Reconciliation, short as _short  # noqa: F401
from core.exchange.gateway import GatewayError, OrderRejected
from core.models import BUY, SELL, Fill, Opportunity, Order, OrderBook, OrderStatus, Position, PositionStatus, Seen
from core.trading.portfolio import Portfolio, build, to_decimal
from core.trading.risk import Approval
from core.trading.rules import Refusal

log = logging.getLogger(__name__)

ZERO = Decimal(0)
UNKNOWN_WINDOW_MS = 30_000  # > recvWindow (10 s) + clock skew: an unseen order can no longer appear
BALANCE_TTL_S = 5.0  # wall time: request economy, not trading logic
EXIT_RETRY_MS = 60_000  # after an exit order that sold nothing
EXIT_CONTINUE_MS = 2_000  # after an exit order that sold part of the position
MAX_FILL_TRIES = 30  # trade-history looks before a missing fill is reported; then about once a minute
SLOW_LOOK_EVERY = 20  # polls between looks after that (a poll every trading.monitor_interval_s)


class LiveExecutor(Protection, Reconciliation, BaseExecutor):
    mode = "live"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tag = ""
        self._orders: dict[str, Order] = {}  # not final yet, or final with fills still to fetch
        self.balance: dict[str, Decimal] = {}
        self._balance_ms: int | None = None
        self._balance_ok = False  # the last balance request succeeded
        self._balance_at = -1e9  # time.monotonic() of the last fetch
        self._balance_stale = True
        self._exit_after: dict[int, int] = {}  # position id -> no new exit attempt before this time
        self.unknown_window_ms = UNKNOWN_WINDOW_MS
        self._fill_tries: dict[str, int] = {}
        self._lagging: set[str] = set()  # orders reported filled before their trades were seen
        self._protection_init()  # exchange-side stops (core.trading.protection)

    async def start(self) -> None:
        await Reconciliation.start(self)
        await self._protect_start()  # after reconciliation: settle legs that filled, protect the rest

    # --- store helpers ---------------------------------------------------------------------------
    async def _recorded(self, o: Order) -> Decimal:
        return await self.store.recorded_quantity(o.client_id)

    async def _last_fill_ts(self, symbol: str) -> int | None:
        return await self.store.last_fill_ts(symbol)

    async def _position(self, pid: int | None) -> Position | None:
        if pid is None:
            return None
        if pid in self._open:
            return self._open[pid]
        return await self.store.position(pid)

    # --- balance and portfolio -------------------------------------------------------------------
    async def _refresh_balance(self, force: bool = False) -> bool:
        now = self.clock.now_ms()
        if (not force and not self._balance_stale and self._balance_ms is not None
                and time.monotonic() - self._balance_at < BALANCE_TTL_S):
            return True
        try:
            bal = await self.gateway.fetch_balance()
        except GatewayError as exc:
            log.warning("live: balance unavailable (%s); using the last known", _short(exc))
            self._balance_ok = False
            return False
        if not isinstance(bal, dict) or any(not isinstance(v, Decimal) or v < 0 for v in bal.values()):
            log.warning("live: malformed balance reply ignored; using the last known")
            self._balance_ok = False
            return False
        self.balance, self._balance_ms, self._balance_stale = dict(bal), now, False
        self._balance_at = time.monotonic()
        self._balance_ok = True
        return True

    @property
    def valuation_ok(self) -> bool:
        return self._balance_ms is not None and self._balance_ok

    def on_fills(self, order: Order, fills: list[Fill]) -> None:
        """Follow market-order fills in the cached balance (saves a balance request per order);
        anything less plain (resting orders, fees in a third asset, trades that arrive after the
        order reported them filled) asks the exchange next time."""
        if not fills:
            return
        base = order.symbol.split("/")[0]
        if order.type != "market" or self._balance_ms is None or order.client_id in self._lagging:
            self._balance_stale = True
            return
        bal = self.balance
        for f in fills:
            fee_asset = f.fee_asset or self.quote
            if fee_asset not in (self.quote, base):
                self._balance_stale = True
            fee_q = f.fee if fee_asset == self.quote else ZERO
            fee_b = f.fee if fee_asset == base else ZERO
            sign = 1 if f.side == BUY else -1
            bal[self.quote] = bal.get(self.quote, ZERO) - sign * f.quantity * f.price - fee_q
            bal[base] = bal.get(base, ZERO) + sign * f.quantity - fee_b
        if bal.get(self.quote, ZERO) < 0 or bal.get(base, ZERO) < 0:
            self._balance_stale = True

    async def portfolio(self, prices: dict[str, float]) -> Portfolio:
        self.update_marks(prices)
        await self._refresh_balance()
        reserved: dict[str, Decimal] = {}
        for o in self._orders.values():
            if o.side == BUY and not o.status.is_final:
                pos = self._open.get(o.position_id)
                px = o.price or self.prices.get(o.symbol) or (pos.entry_price if pos else ZERO)
                reserved[o.symbol] = reserved.get(o.symbol, ZERO) + (o.amount - o.filled) * px
        free = self.balance.get(self.quote, ZERO)
        return build(free + sum(reserved.values(), ZERO), reserved, self.positions, self.prices)

    # --- orders ----------------------------------------------------------------------------------
    def _valid_reply(self, o: Order, r: object) -> bool:
        return (isinstance(r, Order) and r.client_id in (None, "", o.client_id) and bool(r.exchange_id)
                and isinstance(r.status, OrderStatus) and r.filled is not None and ZERO <= r.filled
                and r.filled <= o.amount * Decimal("1.000001"))

    def _valid_fill(self, t: object, symbol: str, side: str | None = None) -> bool:
        return (isinstance(t, Fill) and bool(t.trade_id) and t.symbol == symbol and t.side in (BUY, SELL)
                and (side is None or t.side == side) and isinstance(t.quantity, Decimal) and t.quantity > 0
                and isinstance(t.price, Decimal) and t.price > 0 and isinstance(t.fee, Decimal) and t.fee >= 0)

    async def _send(self, o: Order, pos: Position) -> None:
        """Send a persisted ``new`` order once; any unclear outcome is resolved by looking it up."""
        self._orders[o.client_id] = o
        if o.type != "market":
            self._balance_stale = True  # a resting order locks funds: ask the exchange
        log.info("live: sending order %s: %s %s %s %s%s (position #%s, %s)", o.client_id, o.type, o.side, o.amount,
                 o.symbol, f" @ {o.price}" if o.price is not None else "", pos.id, o.intent)
        try:
            reply = await self.gateway.create_order(o)
        except OrderRejected as exc:
            o.reason = _short(exc)
            o.transition(OrderStatus.REJECTED, self.clock.now_ms())
            log.warning("live: order %s rejected by the exchange: %s", o.client_id, o.reason)
            if o.intent == "exit":
                self._exit_after[pos.id] = self.clock.now_ms() + EXIT_RETRY_MS
            await self.record(o, pos, detail=f"rejected: {o.reason}")
            self._orders.pop(o.client_id, None)
            await self._settle_position(pos)
            return
        except Exception as exc:  # noqa: BLE001 - timeouts, 5xx, resets, odd replies: the order may exist
            await self._unknown(o, pos, _short(exc))
            return
        if not self._valid_reply(o, reply):
            await self._unknown(o, pos, "incomplete reply")
            return
        await self._apply(o, reply, pos, "sent; exchange replied")

    async def _unknown(self, o: Order, pos: Position, why: str) -> None:
        log.warning("live: order %s: no clear answer from the exchange (%s); it may have been placed: looking it "
                    "up by its client id before anything else", o.client_id, why)
        if o.status == OrderStatus.NEW:
            o.transition(OrderStatus.SUBMITTED, self.clock.now_ms())
        o.reason = f"send result unknown: {why}"
        await self.record(o, pos, detail=o.reason)
        await self._refresh(o)

    async def _refresh(self, o: Order, at_start: bool = False) -> None:
        """Look ``o`` up by client id and adopt what the exchange says."""
        pos = await self._position(o.position_id)
        if pos is None:
            log.warning("live: order %s refers to position #%s which is not in the store: not tracked",
                        o.client_id, o.position_id)
            self._orders.pop(o.client_id, None)
            return
        if o.status.is_final:  # only its fills are missing
            await self._apply(o, Seen.of(o), pos, "fills fetched")
            return
        try:
            remote = await self.gateway.fetch_order(o)
        except GatewayError as exc:
            log.info("live: order %s: status lookup failed (%s); will look again", o.client_id, _short(exc))
            return
        now = self.clock.now_ms()
        if remote is None:
            if o.exchange_id is None and now - o.created_ms < self.unknown_window_ms:
                return  # may still be in flight: look again later, send nothing meanwhile
            why = ("never reached the exchange" if o.exchange_id is None
                   else f"the exchange no longer knows order {o.exchange_id}")
            (log.warning if at_start or o.exchange_id else log.info)(
                "live: order %s %s: marked expired", o.client_id, why)
            o.reason = why
            await self._apply(o, Seen(OrderStatus.EXPIRED, max(o.filled, await self._recorded(o))), pos, why)
            return
        if not self._valid_reply(o, remote):
            log.warning("live: order %s: malformed status reply ignored; will look again", o.client_id)
            return
        if at_start and (remote.status != o.status or remote.filled != o.filled):
            log.warning("live: order %s changed while pitrader was down: %s %s -> %s %s; adopting the exchange's "
                        "state", o.client_id, o.status.value, o.filled, remote.status.value, remote.filled)
        await self._apply(o, Seen.of(remote), pos, "status from the exchange")

    def _adopted_status(self, o: Order, seen: OrderStatus) -> OrderStatus:
        """The state ``o`` moves to when the exchange reports ``seen``: the exchange's words mapped
        onto our table explicitly (``transition`` then raises on anything it still forbids)."""
        if seen in (OrderStatus.NEW, OrderStatus.SUBMITTED):  # accepted and resting
            return OrderStatus.PARTIALLY_FILLED if o.filled > 0 else OrderStatus.SUBMITTED
        if seen == OrderStatus.REJECTED and o.filled > 0:  # cannot be: it traded; it ended with its fills
            log.warning("live: order %s reported rejected after %s filled: treated as cancelled with its fills",
                        o.client_id, o.filled)
            return OrderStatus.CANCELLED
        return seen

    async def _apply(self, o: Order, seen: "Seen", pos: Position, detail: str) -> None:
        """Adopt the exchange's view of ``o``, record new fills, persist, then settle the position."""
        now = self.clock.now_ms()
        before = (o.status, o.filled, o.exchange_id)
        if seen.exchange_id and not o.exchange_id:
            o.exchange_id = seen.exchange_id
        if seen.filled > o.filled:
            o.filled = seen.filled
            o.average = seen.average or o.average
        status = o.status if o.status.is_final else self._adopted_status(o, seen.status)
        if status != o.status:
            o.transition(status, now)
        elif status == OrderStatus.PARTIALLY_FILLED and o.filled != before[1]:
            o.updated_ms = now
        fills: list[Fill] = []
        recorded = await self._recorded(o)
        tries = self._fill_tries.get(o.client_id, 0)
        if o.filled > recorded and (tries < MAX_FILL_TRIES or tries % SLOW_LOOK_EVERY == 0):
            fills = await self._trades_for(o)
        if (o.status, o.filled, o.exchange_id) != before or fills:
            await self.record(o, pos, fills, detail=f"{detail}: {o.status.value} {o.filled}/{o.amount}")
        have = await self._recorded(o)
        if have < o.filled and o.filled != before[1]:
            # filled on the exchange, trades not here yet: the cached balance does not show what this
            # order spent or received, and the trades' arrival must not be subtracted from a fresh one
            self._lagging.add(o.client_id)
            self._balance_stale = True
        if o.status.is_final and have < o.filled:
            tries = self._fill_tries[o.client_id] = tries + 1
            if tries == MAX_FILL_TRIES or tries % (50 * SLOW_LOOK_EVERY) == 0:
                # Never settle as if the rest did not happen: an entry closed as "no trade" would leave
                # bought coins on the account with no stop. Keep the order in flight and keep looking.
                log.warning("live: order %s reports %s filled but the trade history shows %s after %d looks; "
                            "the position stays open until its trades appear: check the account",
                            o.client_id, o.filled, have, tries)
        if have >= o.filled:
            self._lagging.discard(o.client_id)
        if o.status.is_final and have >= o.filled:
            self._orders.pop(o.client_id, None)
            self._fill_tries.pop(o.client_id, None)
        else:
            self._orders[o.client_id] = o
        if o.status.is_final:
            if o.intent == "exit" and pos.status == "closing" and pos.id not in self._exit_after:
                self._exit_after[pos.id] = now + (EXIT_CONTINUE_MS if o.filled > 0 else EXIT_RETRY_MS)
            await self._settle_position(pos)

    async def _trades_for(self, o: Order) -> list[Fill]:
        """The order's executions: the account's latest trades on the symbol first (one request, and
        no reliance on our clock matching the exchange's), then everything since our last recorded
        fill there when that was not enough."""
        ids = {o.client_id} | ({o.exchange_id} if o.exchange_id else set())
        found: dict[str, Fill] = {}
        for since in (None, await self._last_fill_ts(o.symbol)):
            try:
                trades = await self.gateway.fetch_my_trades(o.symbol, since_ms=since)
            except GatewayError as exc:
                log.info("live: trades of order %s not available yet (%s); will fetch again", o.client_id,
                         _short(exc))
                break
            for t in trades:
                if t.order_id in ids and self._valid_fill(t, o.symbol, o.side):
                    found[t.trade_id] = t
            if sum((t.quantity for t in found.values()), ZERO) >= o.filled or since is None and \
                    await self._last_fill_ts(o.symbol) is None:
                break
        return sorted(found.values(), key=lambda t: (t.ts_ms, t.trade_id))

    async def _cancel(self, o: Order, pos: Position, why: str) -> None:
        log.info("live: cancelling order %s on %s: %s", o.client_id, o.symbol, why)
        try:
            await self.gateway.cancel_order(o)
        except GatewayError as exc:
            if exc.retryable:
                log.warning("live: cancel of %s failed (%s); will try again", o.client_id, _short(exc))
                return
            # refused or unknown: already filled, cancelled or never there; the lookup below tells which
            log.info("live: cancel of %s refused (%s)", o.client_id, _short(exc))
        self._balance_stale = True
        o.reason = why
        await self._refresh(o)

    # --- positions -------------------------------------------------------------------------------
    async def _settle_position(self, pos: Position) -> None:
        """Once nothing is in flight for ``pos``: close a failed entry, finish or retry an exit."""
        if pos.status == "closed" or pos.id not in self._open:
            return
        orders = await self._orders_of(pos.id)
        if any(not o.status.is_final for o in orders) or any(o.client_id in self._orders for o in orders):
            return
        s = await self._settlement(pos)
        if s.bought <= 0:
            last = next((o for o in reversed(orders) if o.intent == "entry"), None)
            if last is None:
                why = "entry order missing"
            else:
                why = f"entry {last.status.value}" + (f": {last.reason}" if last.reason else "")
            await self.save_closed(pos, s, lambda p: self._close_fields(p, s, why[:200], self.clock.now_ms()))
            log.info("live: position #%s on %s closed without a trade: %s", pos.id, pos.symbol, why)
            return
        if pos.status != "closing":
            return
        px = self.prices.get(pos.symbol) or pos.exit_price or pos.entry_price
        left = sellable(self.market(pos.symbol), s.remaining, px)
        if isinstance(left, Refusal):
            await self.save_closed(pos, s, lambda p: self._close_fields(p, s, p.exit_reason or "exit",
                                                                        self.clock.now_ms()))
            dust = f" ({s.remaining} {pos.base} left on the account: {left.reason})" if s.remaining > 0 else ""
            log.info("live: position #%s on %s closed: %s, pnl %s %s%s", pos.id, pos.symbol, pos.exit_reason,
                     pos.pnl, self.quote, dust)
            return
        if self.clock.now_ms() >= self._exit_after.get(pos.id, 0):
            self._exit_after.pop(pos.id, None)
            await self._send_exit(pos, px)

    async def open_position(self, opp: Opportunity, approval: Approval,
                            book: OrderBook | None = None) -> Position | None:
        now, sym = self.clock.now_ms(), opp.symbol
        limit = self.cfg.trading.order_type == "limit"
        pos = Position(symbol=sym, strategy=opp.strategy, amount=ZERO, entry_price=approval.price,
                       stop=approval.stop, target=approval.target, opened_ms=now,
                       trail_pct=to_decimal(self.cfg.exits(opp.strategy).trailing_stop_pct), highest=approval.price,
                       score=opp.score, reason=opp.reason)

        def make(p: Position) -> Order:
            return Order(client_id=client_order_id(self.tag, p.id, "entry", 1), symbol=sym, side=BUY,
                         type="limit" if limit else "market", amount=approval.amount,
                         price=approval.price if limit else None, intent="entry", position_id=p.id, created_ms=now,
                         updated_ms=now, reason=approval.reason[:200])

        order, _ = await self.record(make, pos, detail="created; not sent yet")
        await self._send(order, pos)
        if self.protecting and pos.status == "open" and pos.amount > 0 and order.status.is_final:
            await self._place(pos)  # the exchange-side stop right after the fill, not at the next poll
        return None if pos.status == "closed" else pos

    async def close_position(self, pos: Position, reason: str, price: float) -> None:
        pos = self.own(pos)
        if pos.id not in self._open or pos.status != "open":
            return  # closed, or an exit is already under way
        px = to_decimal(price)
        if px > 0:
            self.prices[pos.symbol] = px
        reason = await self._before_exit(pos, reason, px)  # the exchange-side stop goes first
        if reason is None:
            return
        if pos.id not in self._open or pos.status != "open":
            return  # a resting leg filled meanwhile: that was the exit
        entries = [o for o in await self._orders_of(pos.id) if o.intent == "entry" and not o.status.is_final]
        for o in entries:
            await self._cancel(self._orders.get(o.client_id, o), pos, f"entry cancelled: {reason}")
        if pos.id not in self._open:
            return
        if any(not o.status.is_final for o in await self._orders_of(pos.id)):
            log.info("live: %s #%s: exit waits for the entry order to settle", pos.symbol, pos.id)
            return
        pos.transition(PositionStatus.CLOSING)
        pos.exit_reason = reason
        await self._send_exit(pos, px)

    async def _send_exit(self, pos: Position, px: Decimal) -> None:
        s = await self._settlement(pos)
        await self._refresh_balance()
        free = self.balance.get(pos.base) if self._balance_ms is not None else None
        amount = s.remaining if free is None else min(s.remaining, free)
        market = self.market(pos.symbol)
        sell = sellable(market, amount, px)
        if isinstance(sell, Refusal):
            if free is not None and free < s.remaining and not isinstance(sellable(market, s.remaining, px), Refusal):
                await self.close_unfilled(pos, "balance_missing", px,
                                          f"the account holds {free} {pos.base}, the position {s.remaining}")
            else:
                await self.close_unfilled(pos, pos.exit_reason or "exit", px, f"cannot sell: {sell.reason}")
            return
        if free is not None and free < s.remaining:
            log.warning("live: %s #%s: the account holds %s %s, the position %s: selling what is there",
                        pos.symbol, pos.id, free, pos.base, s.remaining)
        attempt = await self.store.exit_attempts(pos.id) + 1
        now = self.clock.now_ms()
        pos.transition(PositionStatus.CLOSING)
        order = Order(client_id=client_order_id(self.tag, pos.id, "exit", attempt), symbol=pos.symbol, side=SELL,
                      type="market", amount=sell, price=None, intent="exit", position_id=pos.id, created_ms=now,
                      updated_ms=now, reason=(pos.exit_reason or "")[:200])
        order, _ = await self.record(order, pos, detail="created; not sent yet")
        await self._send(order, pos)

    # --- polling ---------------------------------------------------------------------------------
    async def poll(self) -> None:
        now = self.clock.now_ms()
        timeout_ms = self.cfg.trading.entry_timeout_s * 1000
        for o in list(self._orders.values()):
            if o.client_id not in self._orders:
                continue
            await self._refresh(o)
            if (not o.status.is_final and o.intent == "entry" and now - o.created_ms >= timeout_ms
                    and o.status != OrderStatus.NEW and (o.exchange_id or o.status != OrderStatus.SUBMITTED)):
                pos = await self._position(o.position_id)
                if pos is not None:
                    await self._cancel(o, pos, f"entry_timeout: not filled within {self.cfg.trading.entry_timeout_s}s")
        for pos in [p for p in self._open.values() if p.status == "closing"]:
            await self._settle_position(pos)
        await self.persist_highs()
        await self._protect_poll()
