"""Paper trading: a simulated wallet in the quote currency, filled from the real (or recorded) market.

The wallet is never stored as a number: cash is ``paper.starting_balance`` plus sells minus buys
minus fees over the recorded fills, so a restart resumes exactly where the last fill left it.
Market orders fill at the order book when one is available (walking the levels, which pays the
real spread), else at the last price moved half of ``paper.spread_pct`` against us (recorded data
has trades, not quotes: the last price stands for the mid); then ``paper.slippage_pct`` against us
and ``paper.fee_pct`` in the quote currency. Limit entries rest until the price trades *through*
the limit (filled at the limit: a resting order never crosses the spread), or are cancelled after
``trading.entry_timeout_s``. Exits are market orders, whatever their reason. The exchange-side
stop-limit live mode rests (``trading.exchange_stops``) is modelled: a stop or trailing exit at a
price already below its limit is the stop-limit the market gapped through; it sells at market and
its reason says so (``core.trading.stop_fill``; replays model the candle in ``resting_exit``).
"""
from __future__ import annotations

import logging
from decimal import Decimal

from core.trading.executor import BaseExecutor, client_order_id, sellable, walk
from core.exchange.gateway import GatewayError
from core.models import BUY, SELL, Fill, Opportunity, Order, OrderBook, OrderStatus, Position
from core.trading.portfolio import Portfolio, build, to_decimal
from core.trading.risk import Approval
from core.trading.rules import Refusal, at_step
from core.trading.exits import STOP_LOSS, TRAILING_STOP
from core.trading.stop_fill import missed, protective_levels

log = logging.getLogger(__name__)

ZERO = Decimal(0)
TAG = ""  # paper orders never reach an exchange: no per-database tag needed


class PaperExecutor(BaseExecutor):
    mode = "paper"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cash = to_decimal(self.cfg.paper.starting_balance)
        self._resting: dict[str, Order] = {}  # limit entries waiting for the price, by client id

    # --- state ------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._load_positions()
        self.cash = await self.cash_from_fills()
        for o in await self.store.open_orders():
            if o.intent == "entry" and o.type == "limit" and o.status == OrderStatus.SUBMITTED:
                self._resting[o.client_id] = o
            else:  # a paper order is filled in the transaction that creates it; nothing else can be open
                log.warning("paper: order %s left %s by an earlier run; marking it expired", o.client_id,
                            o.status.value)
                o.transition(OrderStatus.EXPIRED, self.clock.now_ms())
                await self.store.save_order(o, "expired at start (paper)")
        log.info("paper trading: wallet %s %s (starting balance %s + recorded fills), %d open positions, "
                 "%d resting orders", self.cash, self.quote, self.cfg.paper.starting_balance, len(self._open),
                 len(self._resting))

    async def cash_from_fills(self) -> Decimal:
        cash = to_decimal(self.cfg.paper.starting_balance)
        for f in await self.store.bot_fills():
            value = f.quantity * f.price
            fee = f.fee if f.fee_asset in (None, self.quote) else ZERO
            cash += (value if f.side == SELL else -value) - fee
        return cash

    def on_fills(self, order: Order, fills: list[Fill]) -> None:
        for f in fills:
            value = f.quantity * f.price
            fee = f.fee if f.fee_asset in (None, self.quote) else ZERO
            self.cash += (value if f.side == SELL else -value) - fee

    def _reserved(self) -> dict[str, Decimal]:
        fee = 1 + to_decimal(self.cfg.paper.fee_pct)
        out: dict[str, Decimal] = {}
        for o in self._resting.values():
            out[o.symbol] = out.get(o.symbol, ZERO) + o.amount * o.price * fee
        return out

    async def portfolio(self, prices: dict[str, float]) -> Portfolio:
        self.update_marks(prices)
        return build(self.cash, self._reserved(), self.positions, self.prices)

    async def _book(self, symbol: str, book: OrderBook | None) -> OrderBook | None:
        if book is not None:
            return book
        try:
            return await self.gateway.fetch_order_book(symbol)
        except GatewayError:  # replay has none (NotSupported); a failed fetch falls back to the last price
            return None

    def market_price(self, side: str, walked: Decimal | None, last: Decimal) -> Decimal:
        """A market order's fill price before the fee: the book-walked price if there was one, else
        ``last`` moved half the configured spread; then slippage, all against us, exactly."""
        slip = to_decimal(self.cfg.paper.slippage_pct)
        sign = 1 if side == BUY else -1
        if walked is None:
            walked = last * (1 + sign * to_decimal(self.cfg.paper.spread_pct) / 2)
        return walked * (1 + sign * slip)

    def _fill(self, order: Order, qty: Decimal, price: Decimal, n: int = 1) -> Fill:
        fee = qty * price * to_decimal(self.cfg.paper.fee_pct)
        return Fill(trade_id=f"paper-{order.client_id}-{n}", ts_ms=self.clock.now_ms(), symbol=order.symbol,
                    side=order.side, quantity=qty, price=price, fee=fee, fee_asset=self.quote,
                    order_id=order.client_id, source="bot")

    # --- entries ----------------------------------------------------------------------------------
    async def open_position(self, opp: Opportunity, approval: Approval,
                            book: OrderBook | None = None) -> Position | None:
        now, sym = self.clock.now_ms(), opp.symbol
        fee_pct = to_decimal(self.cfg.paper.fee_pct)
        free = self.cash - sum(self._reserved().values(), ZERO)
        limit = self.cfg.trading.order_type == "limit"
        if limit:
            price = approval.price
        else:
            b = await self._book(sym, book)
            price = self.market_price(BUY, walk(b.asks, approval.amount) if b is not None else None,
                                      approval.price)
        need = approval.amount * price * (1 + fee_pct)
        if need > free:
            log.info("paper: entry %s refused: needs %s %s, %s free (insufficient balance)", sym, need, self.quote,
                     free)
            return None
        pos = Position(symbol=sym, strategy=opp.strategy, amount=ZERO, entry_price=price, stop=approval.stop,
                       target=approval.target, opened_ms=now, highest=price, score=opp.score, reason=opp.reason,
                       trail_pct=to_decimal(self.cfg.exits(opp.strategy).trailing_stop_pct))

        def make(p: Position) -> Order:
            o = Order(client_id=client_order_id(TAG, p.id, "entry", 1), symbol=sym, side=BUY,
                      type="limit" if limit else "market", amount=approval.amount, price=price if limit else None,
                      intent="entry", position_id=p.id, created_ms=now, updated_ms=now, reason=approval.reason)
            if limit:
                o.transition(OrderStatus.SUBMITTED, now)
            else:
                o.transition(OrderStatus.FILLED, now)
                o.filled, o.average = approval.amount, price
            return o

        fills = (lambda o: []) if limit else (lambda o: [self._fill(o, approval.amount, price)])
        order, _ = await self.record(make, pos, fills, detail="resting (paper)" if limit else "filled (paper)")
        if limit:
            self._resting[order.client_id] = order
        log.info("paper: %s %s %s %s @ %s (%s)", "placed limit buy" if limit else "bought", order.amount, sym,
                 f"position #{pos.id}", at_step(price, self.market(sym).price_tick), opp.strategy)
        return pos

    # --- exits ------------------------------------------------------------------------------------
    async def close_position(self, pos: Position, reason: str, price: float) -> None:
        pos = self.own(pos)
        if pos.status == "closed" or pos.id not in self._open:
            return
        px = to_decimal(price)
        if px > 0:
            self.prices[pos.symbol] = px
        if reason in (STOP_LOSS, TRAILING_STOP) and self.cfg.trading.exchange_stops != "off":
            level, limit = protective_levels(pos, self.cfg.exits(pos.strategy))  # the stop-limit live mode rests
            if 0 < px < limit:  # the market went through its limit: unfilled on the exchange, sold at market
                reason = missed(reason, level, limit)
        for o in [o for o in self._resting.values() if o.position_id == pos.id]:
            await self._cancel_resting(o, pos, f"entry cancelled: {reason}")
        if pos.id not in self._open:
            return
        market = self.market(pos.symbol)
        amount = sellable(market, self._remaining.get(pos.id, ZERO), px)
        if isinstance(amount, Refusal):
            await self.close_unfilled(pos, reason, px, f"cannot sell: {amount.reason}")
            return
        b = await self._book(pos.symbol, None)
        fill_price = self.market_price(SELL, walk(b.bids, amount) if b is not None else None, px)
        left = sellable(market, self._remaining[pos.id] - amount, fill_price)
        attempt = await self.store.exit_attempts(pos.id) + 1
        now = self.clock.now_ms()
        order = Order(client_id=client_order_id(TAG, pos.id, "exit", attempt), symbol=pos.symbol, side=SELL,
                      type="market", amount=amount, price=None, intent="exit", position_id=pos.id, created_ms=now,
                      updated_ms=now, reason=reason)
        order.transition(OrderStatus.FILLED, now)
        order.filled, order.average = amount, fill_price
        pos.exit_reason = reason
        await self.record(order, pos, [self._fill(order, amount, fill_price)],
                          detail=f"filled (paper): {reason}",
                          close_reason=reason if isinstance(left, Refusal) else None)
        log.info("paper: sold %s %s position #%s @ %s: %s (pnl %s)", amount, pos.symbol, pos.id,
                 at_step(fill_price, market.price_tick), reason, at_step(pos.pnl, market.price_tick))

    async def _cancel_resting(self, o: Order, pos: Position, why: str) -> None:
        o.transition(OrderStatus.CANCELLED, self.clock.now_ms())
        o.reason = why
        await self.record(o, pos, detail=why, close_reason=why if self._remaining.get(pos.id, ZERO) <= 0 else None)
        self._resting.pop(o.client_id, None)  # only once cancelled in the store (a failed write keeps it resting)
        log.info("paper: limit buy %s on %s cancelled: %s", o.client_id, o.symbol, why)

    # --- polling ----------------------------------------------------------------------------------
    async def poll(self) -> None:
        now = self.clock.now_ms()
        for o in list(self._resting.values()):
            pos = self._open.get(o.position_id)
            if pos is None:
                self._resting.pop(o.client_id, None)
                continue
            px = self.prices.get(o.symbol)
            if px is not None and px < o.price:  # traded through the limit: we were filled at it
                o.transition(OrderStatus.FILLED, now)
                o.filled, o.average = o.amount, o.price
                await self.record(o, pos, [self._fill(o, o.amount, o.price)], detail="filled (paper)")
                self._resting.pop(o.client_id, None)
                pos.highest = max(pos.highest, o.price)
                log.info("paper: limit buy %s %s filled @ %s (price %s)", o.amount, o.symbol, o.price, px)
            elif now - o.created_ms >= self.cfg.trading.entry_timeout_s * 1000:
                await self._cancel_resting(o, pos, f"entry_timeout: not filled within "
                                                   f"{self.cfg.trading.entry_timeout_s}s")
        await self.persist_highs()
