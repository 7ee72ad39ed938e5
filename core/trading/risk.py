"""The risk gate: every entry passes here, and every refusal is logged with its reason and counted.

Sizing: the amount that loses ``risk.risk_per_trade_pct`` of equity if the stop is hit, capped by
``trading.position_size_pct`` of equity, the room left under ``risk.max_asset_exposure_pct`` for
the base asset, and the free cash (with fees and slippage headroom); then exchange precision and
minimums. Halts (daily loss, drawdown from the equity peak), per-pair cooldowns, the equity peak
and the day's starting equity live in ``bot_state`` so a restart keeps them.

The drawdown halt also raises ``emergency`` (the engine then closes every position) and stays
until ``risk.max_drawdown_pct`` is changed or it is resumed explicitly: ``pitrader status
--resume`` (works while the service runs: the request is picked up at the next cycle). Resuming
restarts the drawdown count from the equity at that moment.
"""
from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from typing import Any

from core.clock import Clock
from core.config import Config
from core.models import BUY, Market, Opportunity, OrderBook
from core.trading.portfolio import Portfolio, to_decimal
from core.trading.rules import Refusal, conform_order, round_step
from core.store.state import Store
from core.timeframes import DAY_MS

log = logging.getLogger(__name__)

STATE_KEY = "risk"
RESUME_KEY = "risk_resume_request"  # written by `pitrader status --resume`, consumed by the running gate
DAILY_LOSS, DRAWDOWN = "daily_loss", "drawdown"


@dataclass(frozen=True)
class Approval:
    amount: Decimal  # conformed to the market's lot step
    price: Decimal  # limit price, or the reference price of a market order (best ask / last)
    stop: Decimal
    target: Decimal
    reason: str


@dataclass(frozen=True)
class Rejection:
    check: str
    reason: str


def utc_day(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


def _next_utc_midnight(ts_ms: int) -> int:
    return (ts_ms // DAY_MS + 1) * DAY_MS


def _fmt(d: Decimal, places: int = 8) -> str:
    q = d.quantize(Decimal(1).scaleb(-places)) if d.as_tuple().exponent < -places else d
    return f"{q.normalize():f}"


def _pct(x: Decimal | float) -> str:
    return f"{float(x) * 100:.2f}%"


@dataclass(frozen=True)
class BookCheck:
    """Walking the asks for ``amount``: what it would cost and what depth is near the top."""

    best_bid: Decimal
    best_ask: Decimal
    spread: Decimal  # (ask - bid) / mid
    vwap: Decimal | None  # None: the visible book cannot fill the amount
    slippage: Decimal | None  # vwap / best ask - 1
    depth_near: Decimal  # base amount offered within max_slippage of the best ask


def walk_asks(book: OrderBook, amount: Decimal, max_slippage: Decimal) -> BookCheck:
    asks = [(to_decimal(p), to_decimal(a)) for p, a in book.asks if p > 0 and a > 0]
    bids = [(to_decimal(p), to_decimal(a)) for p, a in book.bids if p > 0 and a > 0]
    best_ask, best_bid = asks[0][0], bids[0][0]
    mid = (best_ask + best_bid) / 2
    left, cost = amount, Decimal(0)
    for price, qty in asks:
        take = min(left, qty)
        cost += take * price
        left -= take
        if left <= 0:
            break
    vwap = cost / amount if left <= 0 else None
    limit = best_ask * (1 + max_slippage)
    near = sum((q for p, q in asks if p <= limit), Decimal(0))
    return BookCheck(best_bid, best_ask, (best_ask - best_bid) / mid, vwap,
                     None if vwap is None else vwap / best_ask - 1, near)


class RiskGate:
    def __init__(self, cfg: Config, store: Store, clock: Clock) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock
        self.rejections: collections.Counter[str] = collections.Counter()
        self._halts: dict[str, dict[str, Any]] = {}
        self._cooldowns: dict[str, int] = {}
        self.peak_equity: Decimal | None = None
        self.day: str | None = None
        self.day_start_equity: Decimal | None = None
        self.last_equity: Decimal | None = None
        self._dirty = False

    # --- state ----------------------------------------------------------------------------------
    async def load(self) -> None:
        st = await self.store.get_state(STATE_KEY, {}) or {}
        dec = lambda v: None if v is None else Decimal(str(v))  # noqa: E731
        self.peak_equity = dec(st.get("peak_equity"))
        self.day = st.get("day")
        self.day_start_equity = dec(st.get("day_start_equity"))
        self.last_equity = dec(st.get("last_equity"))
        self._halts = {k: dict(v) for k, v in (st.get("halts") or {}).items()}
        self._cooldowns = {k: int(v) for k, v in (st.get("cooldowns") or {}).items()}
        # Exits are durable in the positions table even if the last state write was lost.
        cool_ms = self._cooldown_ms()
        for pos in await self.store.positions("closed"):
            if pos.closed_ms is not None and pos.amount > 0 and cool_ms > 0:
                until = pos.closed_ms + cool_ms
                if until > self._cooldowns.get(pos.symbol, 0):
                    self._cooldowns[pos.symbol] = until
        now = self.clock.now_ms()
        self._cooldowns = {s: u for s, u in self._cooldowns.items() if u > now}
        self._check_config_lifts()
        for name, h in self._halts.items():
            log.warning("risk: halt %s still in force after restart: %s", name, h.get("reason", ""))
        await self._consume_resume_request()
        await self._save()

    async def _save(self) -> None:
        await self.store.set_state(STATE_KEY, self.snapshot())
        self._dirty = False

    def snapshot(self) -> dict[str, Any]:
        """The persisted form (also what `pitrader status` reads)."""
        s = lambda d: None if d is None else str(d)  # noqa: E731
        return {"peak_equity": s(self.peak_equity), "day": self.day, "day_start_equity": s(self.day_start_equity),
                "last_equity": s(self.last_equity), "halts": self._halts, "cooldowns": self._cooldowns}

    def update_config(self, cfg: Config) -> None:
        self.cfg = cfg
        self._check_config_lifts()

    def _check_config_lifts(self) -> None:
        h = self._halts.get(DRAWDOWN)
        if h is not None and float(h.get("limit", -1)) != self.cfg.risk.max_drawdown_pct:
            del self._halts[DRAWDOWN]
            self._dirty = True
            log.warning("risk: drawdown halt lifted: risk.max_drawdown_pct changed from %s to %s",
                        h.get("limit"), self.cfg.risk.max_drawdown_pct)

    def _cooldown_ms(self) -> int:
        return int(self.cfg.risk.cooldown_minutes * 60_000)

    # --- halts ----------------------------------------------------------------------------------
    @property
    def halts(self) -> list[str]:
        return [f"{name}: {h['reason']}" for name, h in self._halts.items()]

    @property
    def halt_details(self) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for k, v in self._halts.items()}

    @property
    def emergency(self) -> bool:
        """True while the drawdown halt holds: the engine closes every position."""
        return DRAWDOWN in self._halts

    def cooldown_until(self, symbol: str) -> int | None:
        return self._cooldowns.get(symbol)

    async def on_equity(self, equity: Decimal, now_ms: int) -> list[str]:
        """Feed the cycle's equity; returns the halts this raised (already logged at WARNING by the engine)."""
        await self._consume_resume_request()
        r = self.cfg.risk
        new: list[str] = []
        day = utc_day(now_ms)
        if day != self.day:
            self.day, self.day_start_equity = day, equity
            self._dirty = True
            if self._halts.pop(DAILY_LOSS, None) is not None:
                log.info("risk: daily loss halt lifted: new UTC day %s", day)
        if self.peak_equity is None or equity > self.peak_equity:
            self.peak_equity = equity
            self._dirty = True
        if equity != self.last_equity:
            self.last_equity = equity
            self._dirty = True
        start = self.day_start_equity or equity
        loss = (start - equity) / start if start > 0 else Decimal(0)
        if DAILY_LOSS not in self._halts and loss >= Decimal(str(r.max_daily_loss_pct)):
            reason = (f"equity {_fmt(equity, 2)} is {_pct(loss)} below the UTC day's start {_fmt(start, 2)} "
                      f"(limit {_pct(r.max_daily_loss_pct)}); new entries halted until {day} ends")
            self._halts[DAILY_LOSS] = {"reason": reason, "since_ms": now_ms, "until_ms": _next_utc_midnight(now_ms)}
            new.append(f"{DAILY_LOSS}: {reason}")
        peak = self.peak_equity
        dd = (peak - equity) / peak if peak > 0 else Decimal(0)
        if DRAWDOWN not in self._halts and dd >= Decimal(str(r.max_drawdown_pct)):
            reason = (f"equity {_fmt(equity, 2)} is {_pct(dd)} below the peak {_fmt(peak, 2)} "
                      f"(limit {_pct(r.max_drawdown_pct)}); positions closed, entries halted until "
                      f"`pitrader status --resume` or a new risk.max_drawdown_pct")
            self._halts[DRAWDOWN] = {"reason": reason, "since_ms": now_ms, "until_ms": None,
                                     "limit": r.max_drawdown_pct}
            new.append(f"{DRAWDOWN}: {reason}")
        if new:
            self._dirty = True
        if self._dirty:
            await self._save()
        return new

    async def resume(self) -> None:
        """Clear the drawdown halt; the drawdown is counted again from the current equity."""
        if self._halts.pop(DRAWDOWN, None) is not None:
            if self.last_equity is not None:
                self.peak_equity = self.last_equity
            log.warning("risk: drawdown halt cleared by explicit resume; peak equity reset to %s",
                        None if self.peak_equity is None else _fmt(self.peak_equity, 2))
        await self._save()

    async def _consume_resume_request(self) -> None:
        req = await self.store.get_state(RESUME_KEY)
        if not req:
            return
        await self.store.db.execute("DELETE FROM bot_state WHERE key=?", (RESUME_KEY,))
        log.info("risk: resume requested (%s)", req)
        await self.resume()

    def on_exit(self, symbol: str, now_ms: int) -> None:
        cool = self._cooldown_ms()
        if cool > 0:
            self._cooldowns[symbol] = now_ms + cool
            self._dirty = True

    # --- the gate -------------------------------------------------------------------------------
    def _reject(self, symbol: str, check: str, reason: str) -> Rejection:
        self.rejections[check] += 1
        log.info("risk: %s rejected by %s: %s", symbol, check, reason)
        return Rejection(check, reason)

    async def evaluate(self, opp: Opportunity, market: Market, book: OrderBook | None,
                       portfolio: Portfolio) -> Approval | Rejection:
        try:
            return self._evaluate(opp, market, book, portfolio)
        finally:
            if self._dirty:
                await self._save()

    def _evaluate(self, opp: Opportunity, market: Market, book: OrderBook | None,
                  portfolio: Portfolio) -> Approval | Rejection:
        cfg, r, t = self.cfg, self.cfg.risk, self.cfg.trading
        sym, now = opp.symbol, self.clock.now_ms()
        h = self._halts.get(DAILY_LOSS)
        if h is not None and h.get("until_ms") and now >= h["until_ms"]:
            del self._halts[DAILY_LOSS]
            self._dirty = True
        if opp.side != BUY:
            return self._reject(sym, "side", f"{opp.side} signals need short selling; spot only buys, then sells")
        if self._halts:
            return self._reject(sym, "halt", "; ".join(self.halts))
        min_score = cfg.scanner.min_opportunity_score * 100
        if not opp.score >= min_score:
            return self._reject(sym, "min_score", f"score {opp.score:.1f} below scanner.min_opportunity_score "
                                                  f"({min_score:.0f})")
        if market.quote != cfg.universe.quote:
            return self._reject(sym, "quote", f"quote {market.quote} is not the account currency {cfg.universe.quote}")
        if portfolio.has_position(sym):
            return self._reject(sym, "one_per_pair", f"a position on {sym} is already open")
        if len(portfolio.positions) >= r.max_open_positions:
            return self._reject(sym, "max_positions", f"{len(portfolio.positions)} positions open "
                                                      f"(risk.max_open_positions {r.max_open_positions})")
        until = self._cooldowns.get(sym)
        if until is not None:
            if until > now:
                return self._reject(sym, "cooldown", f"exited {sym} recently; cooldown ends in "
                                                     f"{(until - now) / 60_000:.0f} min (risk.cooldown_minutes)")
            del self._cooldowns[sym]
            self._dirty = True
        if not (opp.price > 0):
            return self._reject(sym, "price", f"no usable price ({opp.price})")
        if book is not None and (not book.asks or not book.bids):
            return self._reject(sym, "book", "the order book is empty on one side")
        limit = t.order_type == "limit"
        ref = to_decimal(opp.price)
        if book is not None and not limit:
            ref = to_decimal(book.asks[0][0])  # a market buy starts at the best ask
        if limit:
            ref = round_step(ref, market.price_tick, ROUND_DOWN)
        if ref <= 0:
            return self._reject(sym, "price", f"no usable price ({ref})")

        # Stop and target: the strategy's, but the stop never wider than trading.stop_loss_pct.
        floor = ref * (1 - Decimal(str(t.stop_loss_pct)))
        s = to_decimal(opp.stop) if opp.stop == opp.stop else Decimal(0)  # NaN-safe
        stop = max(s, floor) if 0 < s < ref else floor
        stop = min(round_step(stop, market.price_tick, ROUND_UP), ref)
        tg = to_decimal(opp.target) if opp.target == opp.target else Decimal(0)
        target = tg if tg > ref else ref * (1 + Decimal(str(t.take_profit_pct)))
        target = round_step(target, market.price_tick, ROUND_DOWN)
        if not (stop < ref < target):
            return self._reject(sym, "stop", f"stop {stop} / target {target} do not bracket the price {ref} "
                                             f"at the market's tick {market.price_tick}")

        # Size: risk-based, then every cap; the smallest binds.
        equity = portfolio.equity
        if equity <= 0:
            return self._reject(sym, "equity", f"equity is {equity}")
        fee = Decimal(str(cfg.paper.fee_pct))
        headroom = (1 + fee) * (1 if limit else 1 + Decimal(str(r.max_slippage_pct)))
        caps = {
            "risk": equity * Decimal(str(r.risk_per_trade_pct)) * ref / (ref - stop),
            "position_size": equity * Decimal(str(t.position_size_pct)),
            "exposure": equity * Decimal(str(r.max_asset_exposure_pct)) - portfolio.exposure(market.base),
            "cash": portfolio.cash / headroom,
        }
        binding = min(caps, key=lambda k: caps[k])
        value = caps[binding]
        if value <= 0:
            why = {"exposure": f"{market.base} exposure {_fmt(portfolio.exposure(market.base), 2)} already at "
                               f"risk.max_asset_exposure_pct ({_pct(r.max_asset_exposure_pct)} of equity)",
                   "cash": f"no free {market.quote} (cash {_fmt(portfolio.cash, 2)})"}.get(binding, "no room")
            return self._reject(sym, binding, why)
        order = conform_order(market, BUY, value / ref, ref)
        if isinstance(order, Refusal):
            check = binding if binding in ("cash", "exposure") else "exchange_rules"
            return self._reject(sym, check, f"size {_fmt(value, 2)} {market.quote} (bound by {binding}): "
                                            f"{order.reason}")
        amount = order.amount
        if limit:
            ref = order.price

        if book is not None:
            bc = walk_asks(book, amount, Decimal(str(r.max_slippage_pct)))
            if bc.spread > Decimal(str(r.max_spread_pct)):
                return self._reject(sym, "spread", f"spread {_pct(bc.spread)} above risk.max_spread_pct "
                                                   f"({_pct(r.max_spread_pct)})")
            if bc.vwap is None:
                return self._reject(sym, "depth", f"the visible book cannot fill {amount} {market.base}")
            if bc.slippage > Decimal(str(r.max_slippage_pct)):
                return self._reject(sym, "slippage", f"buying {amount} would cost {_pct(bc.slippage)} over the best "
                                                     f"ask (risk.max_slippage_pct {_pct(r.max_slippage_pct)})")
            need = amount * Decimal(str(r.min_depth_multiple))
            if bc.depth_near < need:
                return self._reject(sym, "depth", f"{_fmt(bc.depth_near)} {market.base} offered within the slippage "
                                                  f"limit, need {_fmt(need)} ({r.min_depth_multiple}x the order)")

        reason = (f"size {_fmt(amount * ref, 2)} {market.quote} bound by {binding} "
                  f"(equity {_fmt(equity, 2)}, stop {_pct((ref - stop) / ref)} below)")
        return Approval(amount=amount, price=ref, stop=stop, target=target, reason=reason)
