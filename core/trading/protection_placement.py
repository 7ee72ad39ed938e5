"""Placing and trailing the exchange-side protection of live positions (see
``core.trading.protection`` for the life cycle of a placement and how it is reconciled).

- Leg ids: our client ids ``pt<tag>-<pos>-l|s|t<row>`` (list, stop leg, take-profit leg), so an
  unclear answer is resolved by looking the legs up by id, like every other order.
- Placement (``_protect_missing``): a row and its legs are persisted *before* the request; the
  quantity is what the account holds for the position after fees, conformed to every filter
  (``core.trading.rules.conform_protection``); a refusal because the price is already through
  the stop (-2010) sells at market at once.
- Trailing (``_trail``): the stop moves up with one ``order/cancelReplace``, so the position is
  never without a resting stop between two requests.
"""
from __future__ import annotations

import logging
import time
from decimal import Decimal

from core.exchange.ccxt_orders import ListRejected, LegReport
from core.exchange.gateway import GatewayError
from core.log import audit
from core.models import SELL, Order, OrderStatus, Position, Seen
from core.store import protections as db
from core.store.protections import ProtectionRow
from core.trading.exits import STOP_LOSS, TAKE_PROFIT, TRAILING_STOP, trail_pct, trailing_stop
from core.trading.portfolio import to_decimal
from core.trading.rules import Protective, Refusal, conform_protection

log = logging.getLogger("core.trading.live")  # one logger for the live executor, whichever module speaks

ZERO = Decimal(0)
REFUSED_RETRY_S = 600.0  # a placement the rules refuse is tried again after this (wall time)
FAILED_RETRY_S = 30.0  # after the exchange refused a placement for another reason


def leg_kind(client_id: str) -> str | None:
    """'stop' / 'target' for a protective leg's client id, None for any other order."""
    tail = client_id.rsplit("-", 1)[-1][:1]
    return {"s": "stop", "t": "target"}.get(tail)


def is_target_leg(client_id: str) -> bool:
    """An OCO's take-profit leg shares its stop leg's locked quantity: count the pair once."""
    return leg_kind(client_id) == "target"


class Placement:
    """Mix-in of ``LiveExecutor`` through ``Protection``: placing and moving protective orders.
    Relies on ``Protection``'s row bookkeeping (``_prot``, ``_legs``, ``_move``, ``_save_row``,
    ``_settle_row``, ``_sync_position``) and the executor's ``_apply``, ``_settlement``,
    ``_refresh_balance``, ``_orders_of``, ``close_position``."""

    def _prot_ids(self, pos: Position, kind: str):
        def ids(row_id: int) -> tuple[str | None, str, str | None]:
            base = f"pt{self.tag}-{pos.id}-"
            return (base + f"l{row_id}" if kind == "oco" else None, base + f"s{row_id}",
                    base + f"t{row_id}" if kind == "oco" else None)
        return ids

    # --- placement --------------------------------------------------------------------------------------
    async def _protect_missing(self) -> None:
        now = time.monotonic()
        for pos in [p for p in self._open.values() if p.status == "open"]:
            if self._prot.get(pos.id) or now < self._prot_after.get(pos.id, 0.0):
                continue
            if pos.amount <= 0 or any(not o.status.is_final for o in await self._orders_of(pos.id)):
                continue  # nothing bought yet, or an order of it still in flight
            await self._place(pos)

    def _levels(self, pos: Position) -> tuple[Decimal, Decimal | None]:
        trail = trailing_stop(pos, self.cfg.exits(pos.strategy))
        stop = max(pos.stop, trail) if trail is not None else pos.stop
        target = pos.target if self.cfg.trading.exchange_stops == "oco" and pos.target > 0 else None
        return stop, target

    def _counts(self, symbol: str) -> tuple[int, int]:
        """Orders / algo orders of ours resting on ``symbol`` (MAX_NUM_ORDERS, MAX_NUM_ALGO_ORDERS)."""
        orders = sum(1 for o in self._orders.values() if o.symbol == symbol and not o.status.is_final)
        legs = [o for o in self._legs.values() if o.symbol == symbol and not o.status.is_final]
        return orders + len(legs), sum(1 for o in legs if leg_kind(o.client_id) == "stop")

    async def _conform(self, pos: Position, amount: Decimal, stop: Decimal, target: Decimal | None,
                       extra_algo: int = 0) -> Protective | Refusal:
        rules = self.lists.rules(pos.symbol)
        avg = None
        if rules.ask_down is not None or rules.ask_up is not None:
            avg = await self.lists.avg_price(pos.symbol)
        orders, algo = self._counts(pos.symbol)
        return conform_protection(rules, amount, stop, to_decimal(self.cfg.trading.stop_limit_offset_pct), target,
                                  avg, orders - extra_algo, algo - extra_algo)

    async def _place(self, pos: Position) -> None:
        s = await self._settlement(pos)
        await self._refresh_balance()
        free = self.balance.get(pos.base) if self._balance_ms is not None else None
        amount = s.remaining if free is None else min(s.remaining, free)
        stop, target = self._levels(pos)
        px = self.prices.get(pos.symbol)
        if px is not None and px <= stop:
            px = await self._price_now(pos.symbol, px)  # the mark may be a cycle old: ask before leaving it bare
        if px is not None and px <= stop:
            return  # already through the stop: the monitor exits this very check
        if target is not None and px is not None and px >= target:
            target = None  # the monitor takes the profit; protect the downside meanwhile
        try:
            plan = await self._conform(pos, amount, stop, target)
        except GatewayError as exc:
            log.info("live: %s #%s: cannot check the protective order yet (%s)", pos.symbol, pos.id, exc)
            self._prot_after[pos.id] = time.monotonic() + self.cfg.trading.monitor_interval_s
            return
        if isinstance(plan, Refusal):
            if self._prot_refused.get(pos.id) != plan.reason:
                self._prot_refused[pos.id] = plan.reason
                log.warning("live: %s #%s has no exchange-side stop: %s; pitrader's monitor watches it (no "
                            "protection while pitrader is down)", pos.symbol, pos.id, plan.reason)
            self._prot_after[pos.id] = time.monotonic() + REFUSED_RETRY_S
            return
        if plan.note:
            log.info("live: %s #%s: %s", pos.symbol, pos.id, plan.note)
        await self._send_protection(pos, plan)

    async def _price_now(self, symbol: str, mark: Decimal) -> Decimal:
        """The last price of ``symbol`` from the exchange (``mark`` if unavailable). ``self.prices``
        holds the scan cycle's marks: after the market jumped, a stop set from a fresher book (an
        entry filled right after a candle closed higher) looks crossed by the old mark, and the
        filled position would wait for the next cycle's marks without any exchange-side stop."""
        try:
            ticker = (await self.gateway.fetch_tickers([symbol])).get(symbol)
        except GatewayError as exc:
            log.info("live: %s: no current price (%s); judging the stop by the last mark", symbol, exc)
            return mark
        return to_decimal(ticker.last) if ticker is not None and ticker.last and ticker.last > 0 else mark

    async def _new_row(self, pos: Position, plan: Protective) -> ProtectionRow:
        now = self.clock.now_ms()
        kind = "oco" if plan.target is not None else "stop"
        row = ProtectionRow(position_id=pos.id, symbol=pos.symbol, kind=kind, amount=plan.amount, stop=plan.stop,
                            limit=plan.limit, target=plan.target, created_ms=now)
        async with self.store.transaction() as conn:
            await db.insert(conn, row, self._prot_ids(pos, kind))
            for cid, price in ((row.stop_id, plan.limit), (row.target_id, plan.target)):
                if cid is None:
                    continue
                leg = Order(client_id=cid, symbol=pos.symbol, side=SELL, type="limit", amount=plan.amount,
                            price=price, intent="exit", position_id=pos.id, created_ms=now, updated_ms=now,
                            reason=f"protective {leg_kind(cid)} (stop {plan.stop})")
                await self.store.save_order(leg, "created; not sent yet", conn)
                self._legs[cid] = leg
        self._prot.setdefault(pos.id, []).append(row)
        self._balance_stale = True  # a resting sell locks base
        return row

    async def _send_protection(self, pos: Position, plan: Protective) -> None:
        row = await self._new_row(pos, plan)
        what = (f"OCO {row.list_id}: take-profit {plan.target}, stop {plan.stop} limit {plan.limit}"
                if row.kind == "oco" else f"stop-limit {row.stop_id}: stop {plan.stop} limit {plan.limit}")
        log.info("live: protecting %s #%s on the exchange: %s, %s %s", pos.symbol, pos.id, what, plan.amount,
                 pos.base)
        try:
            if row.kind == "oco":
                reports = await self.lists.place_oco(pos.symbol, row.list_id, row.stop_id, row.target_id,
                                                     plan.amount, plan.target, plan.stop, plan.limit)
            else:
                reports = [await self.lists.place_stop(pos.symbol, row.stop_id, plan.amount, plan.stop, plan.limit)]
        except ListRejected as exc:
            await self._refused(pos, row, exc)
            return
        except Exception as exc:  # noqa: BLE001 - timeout, 5xx, odd reply: it may rest on the exchange
            log.warning("live: %s #%s: no clear answer placing %s (%s): looking its legs up by client id",
                        pos.symbol, pos.id, row.stop_id, exc)
            for cid in row.leg_ids:
                o = self._legs[cid]
                o.transition(OrderStatus.SUBMITTED, self.clock.now_ms())
                await self.store.save_order(o, f"send result unknown: {str(exc)[:150]}")
            return
        await self._adopt_reports(pos, row, reports, "placed")
        audit("protection", symbol=pos.symbol, position=pos.id, kind=row.kind, stop=plan.stop, limit=plan.limit,
              target=plan.target, amount=plan.amount, list_id=row.list_id)

    async def _adopt_reports(self, pos: Position, row: ProtectionRow, reports: list[LegReport], why: str) -> None:
        by_id = {r.client_id: r for r in reports}
        for cid in row.leg_ids:
            o = self._legs.get(cid)
            r = by_id.get(cid)
            if o is None or r is None:
                continue
            await self._apply(o, Seen(r.status, r.filled, None, r.exchange_id), pos, why)
            if not o.status.is_final:
                self._orders.pop(cid, None)
        await self._settle_row(row)

    async def _refused(self, pos: Position, row: ProtectionRow, exc: ListRejected) -> None:
        for cid in row.leg_ids:
            o = self._legs[cid]
            o.reason = str(exc)[:200]
            o.transition(OrderStatus.REJECTED, self.clock.now_ms())
            await self.store.save_order(o, f"rejected: {o.reason}")
        self._move(row, "failed", str(exc))
        await self._save_row(row)
        if exc.would_trigger:
            px = self.prices.get(pos.symbol) or pos.entry_price
            reason = TAKE_PROFIT if row.target is not None and px >= row.target else STOP_LOSS
            log.warning("live: %s #%s: the exchange refused the protective order because the price is already "
                        "through it (%s): selling at market now", pos.symbol, pos.id, exc)
            await self.close_position(pos, reason, float(px))
            return
        log.warning("live: %s #%s: protective order refused (%s); trying again in %.0f s, pitrader's monitor "
                    "watches it meanwhile", pos.symbol, pos.id, exc, FAILED_RETRY_S)
        self._prot_after[pos.id] = time.monotonic() + FAILED_RETRY_S

    # --- trailing ---------------------------------------------------------------------------------------
    async def _trail(self, pos: Position, row: ProtectionRow) -> None:
        rules = self.lists.rules(pos.symbol)
        if trail_pct(pos, self.cfg.exits(pos.strategy)) <= 0 or not rules.cancel_replace_allowed and rules.known:
            return
        now = time.monotonic()
        if now - self._trail_at.get(pos.id, -1e18) < self.cfg.trading.trail_update_s:
            return
        stop, _ = self._levels(pos)
        tick = self.lists.rules(pos.symbol).tick or ZERO
        px = self.prices.get(pos.symbol)
        if stop <= row.stop + tick or (px is not None and px <= stop):
            return
        old = self._legs.get(row.stop_id)
        if old is None or old.status != OrderStatus.SUBMITTED or old.filled > 0:
            return
        self._trail_at[pos.id] = now
        try:
            plan = await self._conform(pos, row.amount, stop, None, extra_algo=1)
        except GatewayError as exc:
            log.info("live: %s #%s: trailing stop not moved (%s)", pos.symbol, pos.id, exc)
            return
        if isinstance(plan, Refusal):
            log.info("live: %s #%s: trailing stop not moved: %s", pos.symbol, pos.id, plan.reason)
            return
        new = await self._new_row(pos, plan)
        log.info("live: moving the exchange stop of %s #%s from %s to %s (cancelReplace %s -> %s)", pos.symbol,
                 pos.id, row.stop, plan.stop, row.stop_id, new.stop_id)
        try:
            report = await self.lists.replace_stop(pos.symbol, row.stop_id, new.stop_id, plan.amount, plan.stop,
                                                   plan.limit)
        except ListRejected as exc:
            cancel_ok = (exc.data or {}).get("cancelResult") == "SUCCESS"
            for cid in new.leg_ids:
                o = self._legs[cid]
                o.reason = str(exc)[:200]
                o.transition(OrderStatus.REJECTED, self.clock.now_ms())
                await self.store.save_order(o, f"rejected: {o.reason}")
            self._move(new, "failed", str(exc))
            await self._save_row(new)
            await self._sync_position(pos.id)  # the old legs: cancelled (-2021) or filled / gone (-2022)
            if cancel_ok and pos.id in self._open and pos.status == "open":
                log.warning("live: %s #%s: the old stop was cancelled but the new one refused (%s)", pos.symbol,
                            pos.id, exc)
                if exc.would_trigger:
                    await self.close_position(pos, TRAILING_STOP, float(px or stop))
                else:
                    await self._place(pos)
            return
        except Exception as exc:  # noqa: BLE001 - unknown outcome: both rows are looked up next poll
            log.warning("live: %s #%s: no clear answer moving the stop (%s); looking it up", pos.symbol, pos.id, exc)
            for cid in new.leg_ids:
                o = self._legs[cid]
                o.transition(OrderStatus.SUBMITTED, self.clock.now_ms())
                await self.store.save_order(o, f"send result unknown: {str(exc)[:150]}")
            return
        await self._adopt_reports(pos, new, [report], "placed by cancelReplace")
        await self._sync_position(pos.id)  # the replaced legs: cancelled (and any partial fill recorded)
