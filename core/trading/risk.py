"""The risk gate: every entry passes here, and every refusal is logged with its reason and counted.

An entry passes policy (here), pricing (``pricing``: reference price, stop, target), sizing
(``sizing``: risk-based, capped by position size, asset exposure and cash; then exchange
precision and minimums) and the order-book checks (``book_checks``). Halts (daily loss,
drawdown from the equity peak), per-pair cooldowns, the equity peak and the day's starting
equity live in ``bot_state`` so a restart keeps them.

A refusal is logged at INFO when it starts or changes, at DEBUG while it repeats (``refusals``).

The drawdown halt also raises ``emergency`` (the engine then closes every position) and stays
until ``risk.max_drawdown_pct`` is changed, it is resumed explicitly (``pitrader status
--resume``, picked up at the next cycle while the service runs), or the cooling-off
``risk.drawdown_cooloff_hours`` has passed (0: explicit resume only). Resuming restarts the
drawdown count from the equity at that moment, and until the equity is back at the peak before
the halt every entry risks ``risk.drawdown_resume_size`` times ``risk.risk_per_trade_pct`` and the
drawdown limit is scaled the same way (reduced size, reduced budget): a live account is protected,
and a backtest goes on trading at reduced size instead of idling. A second drawdown halt in that
phase does not cool off by itself: a market that took the limit twice waits for its owner, so
the automatic losses stop at about 1 - (1 - L)(1 - L x s) (15 %, half size: 21.4 %).

Sizing keeps every open stop-out within the loss the daily and drawdown limits still allow
(``loss_budget``), so those limits are caps: only a gap through a stop (or gains given back by
positions opened before the day or the peak) can take the account beyond them.
"""
from __future__ import annotations

import collections
import functools
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from core.clock import Clock
from core.config import Config
from core.events import Event
from core.models import BUY, Market, Opportunity, OrderBook
from core.store.state import Store
from core.timeframes import DAY_MS
from core.trading.book_checks import check_book, one_sided
from core.trading.portfolio import Portfolio
from core.trading.pricing import Bracket, entry_bracket
from core.trading.refusals import GLOBAL_CHECKS, RefusalLog
from core.trading.rules import fmt_dec, fmt_pct
from core.trading.sizing import size_entry

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
    return _day_name(ts_ms // DAY_MS)


@functools.lru_cache(maxsize=4)
def _day_name(day: int) -> str:
    """The date of day number ``day`` since the epoch (cached: a cycle asks every time, the answer changes daily)."""
    return datetime.fromtimestamp(day * 86_400, tz=timezone.utc).strftime("%Y-%m-%d")


def _next_utc_midnight(ts_ms: int) -> int:
    return (ts_ms // DAY_MS + 1) * DAY_MS


class RiskGate:
    def __init__(self, cfg: Config, store: Store, clock: Clock) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock
        self.rejections: collections.Counter[str] = collections.Counter()  # since start, by check
        self.refusals = RefusalLog()  # what was logged; the engine ends its cycles
        self._halts: dict[str, dict[str, Any]] = {}
        self._cooldowns: dict[str, int] = {}
        self.peak_equity: Decimal | None = None
        self.day: str | None = None
        self.day_start_equity: Decimal | None = None
        self.last_equity: Decimal | None = None
        self.reduced_until: Decimal | None = None  # after a drawdown halt: reduced size until this equity
        self._dirty = False
        self._events: list[Event] = []  # halt/resume notifications, written with the next save

    # --- state ----------------------------------------------------------------------------------
    async def load(self) -> None:
        st = await self.store.get_state(STATE_KEY, {}) or {}
        dec = lambda v: None if v is None else Decimal(str(v))  # noqa: E731
        self.peak_equity = dec(st.get("peak_equity"))
        self.day = st.get("day")
        self.day_start_equity = dec(st.get("day_start_equity"))
        self.last_equity = dec(st.get("last_equity"))
        self.reduced_until = dec(st.get("reduced_until"))
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
        """The risk state, and any halt/resume notifications with it in one transaction."""
        events, self._events = self._events, []
        if events and self.store.outbox_enabled:
            async with self.store.transaction() as conn:
                await self.store.set_state(STATE_KEY, self.snapshot(), conn)
                for e in events:
                    await self.store.add_event(e, conn)
        else:
            await self.store.set_state(STATE_KEY, self.snapshot())
        self._dirty = False

    def _event(self, kind: str, text: str, key: str) -> None:
        self._events.append(Event(kind, text, self.clock.now_ms(), key=key))

    def snapshot(self) -> dict[str, Any]:
        """The persisted form (also what `pitrader status` reads)."""
        s = lambda d: None if d is None else str(d)  # noqa: E731
        return {"peak_equity": s(self.peak_equity), "day": self.day, "day_start_equity": s(self.day_start_equity),
                "last_equity": s(self.last_equity), "halts": self._halts, "cooldowns": self._cooldowns,
                "reduced_until": s(self.reduced_until)}

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
        h = self._halts.get(DRAWDOWN)
        if h is not None and h.get("until_ms") and now_ms >= h["until_ms"]:
            self.last_equity = equity
            await self.resume(f"cooling-off of {r.drawdown_cooloff_hours:g} h (risk.drawdown_cooloff_hours) over")
        if self.reduced_until is not None and equity >= self.reduced_until:
            log.info("risk: equity %s back at the peak before the drawdown halt: full size again", fmt_dec(equity, 2))
            self.reduced_until = None
            self._dirty = True
        day = utc_day(now_ms)
        if day != self.day:
            self.day, self.day_start_equity = day, equity
            self._dirty = True
            if self._halts.pop(DAILY_LOSS, None) is not None:
                log.info("risk: daily loss halt lifted: new UTC day %s", day)
                self._event("resume", f"Daily loss halt lifted: new UTC day {day}; entries allowed again.", DAILY_LOSS)
        if self.peak_equity is None or equity > self.peak_equity:
            self.peak_equity = equity
            self._dirty = True
        if equity != self.last_equity:
            self.last_equity = equity
            self._dirty = True
        start = self.day_start_equity or equity
        loss = (start - equity) / start if start > 0 else Decimal(0)
        if DAILY_LOSS not in self._halts and loss >= Decimal(str(r.max_daily_loss_pct)):
            reason = (f"equity {fmt_dec(equity, 2)} is {fmt_pct(loss)} below the UTC day's start {fmt_dec(start, 2)} "
                      f"(limit {fmt_pct(r.max_daily_loss_pct)}); new entries halted until {day} ends")
            self._halts[DAILY_LOSS] = {"reason": reason, "since_ms": now_ms, "until_ms": _next_utc_midnight(now_ms)}
            new.append(f"{DAILY_LOSS}: {reason}")
            self._event("halt", f"Halt (daily loss): {reason}", DAILY_LOSS)
        peak = self.peak_equity
        dd = (peak - equity) / peak if peak > 0 else Decimal(0)
        limit = self.drawdown_limit()
        if DRAWDOWN not in self._halts and dd >= limit:
            again = self.reduced_until is not None  # still paying back an earlier halt: no automatic resume
            cool_ms = 0 if again else int(r.drawdown_cooloff_hours * 3_600_000)
            until = f"{r.drawdown_cooloff_hours:g} h have passed, " if cool_ms else ""
            reason = (f"equity {fmt_dec(equity, 2)} is {fmt_pct(dd)} below the peak {fmt_dec(peak, 2)} "
                      f"(limit {fmt_pct(limit)}"
                      + (", reduced after an earlier drawdown halt; a second halt before that peak is back "
                         "does not cool off by itself" if again else "")
                      + f"); positions closed, entries halted until {until}`pitrader status --resume` or a new "
                      "risk.max_drawdown_pct")
            self._halts[DRAWDOWN] = {"reason": reason, "since_ms": now_ms,
                                     "until_ms": now_ms + cool_ms if cool_ms else None,
                                     "limit": r.max_drawdown_pct, "peak": str(peak)}
            new.append(f"{DRAWDOWN}: {reason}")
            self._event("halt", f"Halt (drawdown): {reason}", DRAWDOWN)
        if new:
            self._dirty = True
        if self._dirty:
            await self._save()
        return new

    async def resume(self, why: str = "explicit resume") -> None:
        """Clear the drawdown halt; the drawdown is counted again from the current equity, and entries
        are sized down (``risk.drawdown_resume_size``) until the equity is back at the old peak."""
        h = self._halts.pop(DRAWDOWN, None)
        if h is not None:
            old_peak = Decimal(str(h.get("peak") or self.peak_equity or 0))
            if self.last_equity is not None:
                self.peak_equity = self.last_equity
            if self.cfg.risk.drawdown_resume_size < 1 and old_peak > 0:  # the first halt's peak, if higher
                self.reduced_until = max(old_peak, self.reduced_until or old_peak)
            log.warning("risk: drawdown halt cleared (%s); peak equity reset to %s", why,
                        None if self.peak_equity is None else fmt_dec(self.peak_equity, 2))
            self._event("resume", f"Drawdown halt cleared ({why}); the drawdown counts from "
                        f"{fmt_dec(self.peak_equity, 2) if self.peak_equity is not None else 'now'}.", DRAWDOWN)
        await self._save()

    async def _consume_resume_request(self) -> None:
        req = await self.store.get_state(RESUME_KEY)
        if not req:
            return
        await self.store.delete_state(RESUME_KEY)
        log.info("risk: resume requested (%s)", req)
        await self.resume()

    def on_exit(self, symbol: str, now_ms: int) -> None:
        cool = self._cooldown_ms()
        if cool > 0:
            self._cooldowns[symbol] = now_ms + cool
            self._dirty = True

    # --- the gate -------------------------------------------------------------------------------
    # evaluate() runs four steps, each returning a Rejection or handing on: policy (may this pair be
    # entered at all: cheap, no book needed; the engine runs it before fetching a book), pricing
    # (reference price, stop, target), sizing (caps, exchange rules) and the book checks.
    def _reject(self, symbol: str, check: str, reason: str) -> Rejection:
        self.rejections[check] += 1
        if check in GLOBAL_CHECKS:
            self.refusals.refuse(log, symbol, check, "risk: entries refused by %s: %s", check, reason)
        else:
            self.refusals.refuse(log, symbol, check, "risk: %s rejected by %s: %s", symbol, check, reason)
        return Rejection(check, reason)

    async def evaluate(self, opp: Opportunity, market: Market, book: OrderBook | None,
                       portfolio: Portfolio) -> Approval | Rejection:
        try:
            return self._evaluate(opp, market, book, portfolio)
        finally:
            if self._dirty:
                await self._save()

    async def precheck(self, opp: Opportunity, market: Market, portfolio: Portfolio) -> Rejection | None:
        """The policy step alone: a Rejection, or None if the pair is worth a book and ``evaluate``."""
        try:
            return self._policy(opp, market, portfolio)
        finally:
            if self._dirty:
                await self._save()

    def _evaluate(self, opp: Opportunity, market: Market, book: OrderBook | None,
                  portfolio: Portfolio) -> Approval | Rejection:
        sym = opp.symbol
        if (no := self._policy(opp, market, portfolio)) is not None:
            return no
        if book is not None and (bad := one_sided(book)) is not None:
            return self._reject(sym, *bad)
        bracket = entry_bracket(opp, market, self.cfg.trading, book)
        if not isinstance(bracket, Bracket):
            return self._reject(sym, *bracket)
        cfg = self.cfg
        if self.reduced_until is not None:  # after a drawdown halt: smaller bets until the old peak is back
            cfg = replace(cfg, risk=replace(cfg.risk, risk_per_trade_pct=cfg.risk.risk_per_trade_pct
                                            * cfg.risk.drawdown_resume_size))
        size = size_entry(cfg, portfolio, market, bracket.price, bracket.stop, self.loss_budget(portfolio))
        if isinstance(size, tuple):
            return self._reject(sym, *size)
        amount, ref, stop = size.order.amount, bracket.price, bracket.stop
        if self.cfg.trading.order_type == "limit":
            ref = size.order.price
        if book is not None and (bad := check_book(book, amount, market.base, self.cfg.risk)) is not None:
            return self._reject(sym, *bad)
        reason = (f"size {fmt_dec(amount * ref, 2)} {market.quote} bound by {size.binding} "
                  f"(equity {fmt_dec(portfolio.equity, 2)}, stop {fmt_pct((ref - stop) / ref)} below)")
        return Approval(amount=amount, price=ref, stop=stop, target=bracket.target, reason=reason)

    def loss_budget(self, portfolio: Portfolio) -> Decimal | None:
        """The loss the day's and the drawdown's caps still allow from the current equity (None
        before the first equity was fed); sizing keeps every open stop-out within it."""
        r, equity = self.cfg.risk, portfolio.equity
        if self.day_start_equity is None or self.peak_equity is None:
            return None
        day_floor = self.day_start_equity * (1 - Decimal(str(r.max_daily_loss_pct)))
        dd_floor = self.peak_equity * (1 - self.drawdown_limit())
        return equity - max(day_floor, dd_floor)

    def drawdown_limit(self) -> Decimal:
        """``risk.max_drawdown_pct``, times ``risk.drawdown_resume_size`` while entries are reduced
        after a drawdown halt (the count then starts at the resume)."""
        r = self.cfg.risk
        limit = Decimal(str(r.max_drawdown_pct))
        return limit * Decimal(str(r.drawdown_resume_size)) if self.reduced_until is not None else limit

    def _policy(self, opp: Opportunity, market: Market, portfolio: Portfolio) -> Rejection | None:
        """Whether this pair may be entered now at all: side, halts, score, quote, slots, cooldown."""
        cfg, r = self.cfg, self.cfg.risk
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
        return None
