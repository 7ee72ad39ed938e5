"""Exchange-side protection of live positions: an OCO (take-profit + stop-limit) or a stop-limit
alone rests on the exchange for every open position, so a Pi that loses power, network or its
process leaves no position without a stop.

Life cycle of one placement (a ``protections`` row, ``TRANSITIONS``)::

    new ──(exchange acknowledged)──> active ──(a leg filled / cancelled / replaced)──> done
     └──(refused, or never reached the exchange)──> failed

- **Placement** (``_protect_missing``, every monitor interval): a position that holds base, whose
  entry is no longer in flight and that has no live protection gets one. The row and its legs
  (ordinary ``orders`` rows: type limit, intent exit, our client ids ``pt<tag>-<pos>-l|s|t<row>``)
  are persisted *before* the request; an unclear answer is resolved by looking the legs up by
  those ids, like every other order. Quantity: what the account holds for the position after fees
  (``min(settled remaining, free balance)``), conformed to every filter
  (``core.trading.rules.conform_protection``). A refusal because the price is already through
  the stop (-2010) sells at market at once.
- **Trailing** (``_trail``): at most every ``trading.trail_update_s`` the stop moves up with one
  ``order/cancelReplace`` (STOP_ON_FAILURE) on the stop leg. For an OCO Binance cancels the whole
  list and places the new stop-limit in the same request, so the position is never without a
  resting stop between two requests; the take-profit then leaves the exchange and the monitor's
  target check (a pitrader exit) takes it. A cancel that fails places nothing (the stop filled).
- **Exits pitrader makes itself** (``_before_exit``, called by ``close_position``): cancel the live
  protection first (DELETE orderList / cancel the stop), record whatever it filled, then sell what
  is left. A monitor stop or target hit while a leg rests waits ``GRACE_INTERVALS`` monitor
  intervals for the exchange to fill it; a stop-limit gapped through its limit stays unfilled on
  the exchange, and then the emergency path cancels it and sells at market (counted as a miss).
- **Reconciliation** (``_sync_protection``, at start and on every poll): a leg that filled closes
  the position with that fill (recorded once through the order path, so it reaches the ledger);
  the other leg is gone (OCO) or cancelled; a list found cancelled or expired with nothing filled
  leaves the position unprotected, and the next placement pass protects it again.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from decimal import Decimal

from core.exchange.ccxt_orders import ListRejected, LegReport, order_lists
from core.exchange.gateway import GatewayError
from core.log import audit
from core.models import SELL, Order, OrderStatus, Position, PositionStatus
from core.store import protections as db
from core.store.protections import ProtectionRow
from core.trading.exits import STOP_LOSS, TAKE_PROFIT, TRAILING_STOP, trail_pct, trailing_stop
from core.trading.portfolio import to_decimal
from core.trading.rules import Protective, Refusal, conform_protection
from core.trading.stop_fill import MISSED, missed

log = logging.getLogger("core.trading.live")

ZERO = Decimal(0)
TRANSITIONS = {"new": {"active", "done", "failed"}, "active": {"done"}, "done": set(), "failed": set()}
GRACE_INTERVALS = 3  # monitor intervals a resting leg gets to fill after the monitor saw its level
REFUSED_RETRY_S = 600.0  # a placement the rules refuse is tried again after this (wall time)
FAILED_RETRY_S = 30.0  # after the exchange refused a placement for another reason
MISSES_KEY = "stop_limit_misses"
LEVEL_EXITS = (STOP_LOSS, TRAILING_STOP, TAKE_PROFIT)


@dataclass(frozen=True, slots=True)
class _Seen:
    """An exchange answer about one leg, in the shape ``LiveExecutor._apply`` adopts."""

    status: OrderStatus
    filled: Decimal
    average: Decimal | None = None
    exchange_id: str | None = None


def leg_kind(client_id: str) -> str | None:
    """'stop' / 'target' for a protective leg's client id, None for any other order."""
    tail = client_id.rsplit("-", 1)[-1][:1]
    return {"s": "stop", "t": "target"}.get(tail)


def is_target_leg(client_id: str) -> bool:
    """An OCO's take-profit leg shares its stop leg's locked quantity: count the pair once."""
    return leg_kind(client_id) == "target"


class Protection:
    """Mix-in of ``LiveExecutor`` (see the module doc). Relies on its ``_refresh``, ``_apply``,
    ``_cancel``, ``_settlement``, ``_refresh_balance``, ``close_position``."""

    def _protection_init(self) -> None:
        self.lists = order_lists(self.gateway)
        self._prot: dict[int, list[ProtectionRow]] = {}  # position id -> live rows (new/active), oldest first
        self._legs: dict[str, Order] = {}  # client id -> leg of a live row
        self._prot_after: dict[int, float] = {}  # position id -> no placement before (time.monotonic())
        self._prot_refused: dict[int, str] = {}  # position id -> the refusal last logged
        self._trail_at: dict[int, float] = {}  # position id -> monotonic time of the last stop move
        self._through: dict[int, float] = {}  # position id -> when the monitor first saw a level crossed
        self.stop_misses = 0
        self._cancelling: set[int] = set()  # rows pitrader itself is cancelling
        self._missed: set[int] = set()  # positions whose stop-limit miss was counted

    @property
    def protecting(self) -> bool:
        return self.lists is not None and self.cfg.trading.exchange_stops != "off"

    # --- ids and rows ---------------------------------------------------------------------------
    def _prot_ids(self, pos: Position, kind: str):
        def ids(row_id: int) -> tuple[str | None, str, str | None]:
            base = f"pt{self.tag}-{pos.id}-"
            return (base + f"l{row_id}" if kind == "oco" else None, base + f"s{row_id}",
                    base + f"t{row_id}" if kind == "oco" else None)
        return ids

    def _move(self, row: ProtectionRow, new: str, why: str) -> None:
        if new == row.status:
            return
        if new not in TRANSITIONS[row.status]:
            raise RuntimeError(f"protection {row.id}: {row.status} -> {new} is not allowed")
        row.status, row.reason, row.updated_ms = new, why[:300], self.clock.now_ms()

    async def _save_row(self, row: ProtectionRow) -> None:
        async with self.store.transaction() as conn:
            await db.update(conn, row)
        if row.status in ("done", "failed"):
            rows = self._prot.get(row.position_id, [])
            if row in rows:
                rows.remove(row)
            if not rows:
                self._prot.pop(row.position_id, None)
            for cid in row.leg_ids:
                self._legs.pop(cid, None)

    def resting(self, pos_id: int) -> list[ProtectionRow]:
        return list(self._prot.get(pos_id, []))

    def _current(self, pos_id: int) -> ProtectionRow | None:
        rows = [r for r in self._prot.get(pos_id, []) if r.status == "active"]
        return rows[-1] if rows else None

    async def _leg(self, cid: str) -> Order | None:
        o = self._legs.get(cid) or self._orders.get(cid)
        if o is None:
            o = await self.store.get_order(cid)
        if o is not None:
            self._legs[cid] = o
        return o

    async def _refresh_leg(self, o: Order) -> None:
        """Look a leg up (``_refresh`` records its fills); a resting leg is not polled one by one."""
        await self._refresh(o)
        if not o.status.is_final:
            self._orders.pop(o.client_id, None)

    # --- start and poll -------------------------------------------------------------------------
    async def _protect_start(self) -> None:
        """After reconciliation: adopt the stored protections, settle what happened while down,
        then protect every position that has no resting stop."""
        for row in await db.live(self.store.db):
            pos = self._open.get(row.position_id)
            self._prot.setdefault(row.position_id, []).append(row)
            for cid in row.leg_ids:
                await self._leg(cid)
            if pos is None:
                log.warning("live: protection %s of position #%s, which is no longer open: cancelling it",
                            row.stop_id, row.position_id)
        for pid in sorted(self._prot):
            await self._sync_position(pid, at_start=True)
        for o in list(self._orders.values()):
            if o.client_id in self._legs and not o.status.is_final:
                self._orders.pop(o.client_id, None)
        self.stop_misses = int(await self.store.get_state(MISSES_KEY, 0) or 0)
        if self.protecting:
            await self._protect_missing()
        bare = [p.id for p in self._open.values() if p.status == "open" and p.amount > 0 and not self._prot.get(p.id)]
        log.info("live: protection check done: %d open positions, %d with a resting exchange stop%s",
                 len(self._open), sum(1 for p in self._open.values() if self._prot.get(p.id)),
                 f", without: {bare}" if bare else "")

    async def _protect_poll(self) -> None:
        """Every monitor interval: notice legs that left the book (one open-lists request for the
        OCOs, one open-orders request per symbol with a lone stop), then place what is missing and
        move trailing stops."""
        if self.lists is None:
            return
        if self._prot:
            await self._watch()
        if self.protecting:
            await self._protect_missing()
            for pos in [p for p in self._open.values() if p.status == "open"]:
                row = self._current(pos.id)
                if row is not None:
                    await self._trail(pos, row)

    async def _watch(self) -> None:
        rows = [r for rs in self._prot.values() for r in rs]
        changed: set[int] = {r.position_id for r in rows if r.status == "new"}
        ocos = [r for r in rows if r.status == "active" and r.kind == "oco"]
        if ocos:
            try:
                open_lists = await self.lists.open_lists()
            except GatewayError as exc:
                log.info("live: open order lists unavailable (%s); will look again", exc)
                open_lists = None
            if open_lists is not None:
                changed |= {r.position_id for r in ocos if r.list_id not in open_lists}
        for sym in sorted({r.symbol for r in rows if r.status == "active" and r.kind == "stop"}):
            try:
                remote = {o.client_id: o for o in await self.gateway.fetch_open_orders(sym)}
            except GatewayError as exc:
                log.info("live: open orders of %s unavailable (%s); will look again", sym, exc)
                continue
            for r in rows:
                if r.symbol == sym and r.kind == "stop" and r.status == "active":
                    leg = self._legs.get(r.stop_id)
                    o = remote.get(r.stop_id)
                    if o is None or (leg is not None and o.filled != leg.filled):
                        changed.add(r.position_id)
        for pid in sorted(changed):
            await self._sync_position(pid)

    async def _sync_position(self, pid: int, at_start: bool = False) -> None:
        """Adopt what the exchange says about every leg of ``pid``'s live protections."""
        for row in list(self._prot.get(pid, [])):
            for cid in row.leg_ids:
                o = await self._leg(cid)
                if o is not None and not o.status.is_final:
                    await self._refresh_leg(o)
            await self._settle_row(row, at_start)

    async def _settle_row(self, row: ProtectionRow, at_start: bool = False) -> None:
        legs = [self._legs.get(cid) for cid in row.leg_ids]
        legs = [o for o in legs if o is not None]
        pos = self._open.get(row.position_id)
        filled = sum((o.filled for o in legs), ZERO)
        if legs and all(o.status.is_final for o in legs):
            if row.status == "new" and filled <= 0 and all(o.status in (OrderStatus.EXPIRED, OrderStatus.REJECTED)
                                                           for o in legs):
                self._move(row, "failed", "never reached the exchange")
            else:
                ours = row.id in self._cancelling
                self._cancelling.discard(row.id)
                self._move(row, "done", "filled" if filled > 0 else "cancelled by pitrader" if ours
                           else "cancelled or expired on the exchange")
            await self._save_row(row)
            if pos is None:
                return
            if filled > 0:
                await self._exchange_exit(pos, row, legs, at_start)
            elif row.reason.startswith("cancelled or expired") and not self._prot.get(pos.id) \
                    and pos.status == "open":
                log.warning("live: the protection of %s #%s (%s) is gone from the exchange with nothing filled: "
                            "placing a new one", pos.symbol, pos.id, row.stop_id)
            return
        if row.status == "new" and any(o.exchange_id for o in legs):
            self._move(row, "active", "acknowledged")
            await self._save_row(row)
        if pos is None and row.status == "active":  # the position closed without it: nothing to protect
            await self._cancel_row(row, None, "position closed")

    async def _exchange_exit(self, pos: Position, row: ProtectionRow, legs: list[Order], at_start: bool) -> None:
        """A leg filled on the exchange: the position exits with that fill (already recorded)."""
        if pos.id not in self._open or pos.status == PositionStatus.CLOSED:
            return
        won = max(legs, key=lambda o: o.filled)
        kind = leg_kind(won.client_id)
        reason = TAKE_PROFIT if kind == "target" else (TRAILING_STOP if row.stop > pos.stop else STOP_LOSS)
        (log.warning if at_start else log.info)(
            "live: %s #%s: the exchange's %s leg %s filled %s @ %s%s", pos.symbol, pos.id, kind, won.client_id,
            won.filled, won.average, " while pitrader was down" if at_start else "")
        audit("protection_fill", symbol=pos.symbol, position=pos.id, leg=won.client_id, filled=won.filled,
              reason=reason)
        self._through.pop(pos.id, None)
        if pos.status == PositionStatus.OPEN:
            pos.transition(PositionStatus.CLOSING)
            pos.exit_reason = pos.exit_reason or reason
        self._exit_after.pop(pos.id, None)
        self._balance_stale = True
        await self._settle_position(pos)

    # --- placement ------------------------------------------------------------------------------
    async def _protect_missing(self) -> None:
        now = time.monotonic()
        for pos in [p for p in self._open.values() if p.status == "open"]:
            if self._prot.get(pos.id) or now < self._prot_after.get(pos.id, 0.0):
                continue
            if pos.amount <= 0 or any(not o.status.is_final for o in await self._orders_of(pos.id)):
                continue  # nothing bought yet, or an order of it still in flight
            await self._place(pos)

    def _levels(self, pos: Position) -> tuple[Decimal, Decimal | None]:
        trail = trailing_stop(pos, self.cfg.trading)
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
            await self._apply(o, _Seen(r.status, r.filled, None, r.exchange_id), pos, why)
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

    # --- trailing -------------------------------------------------------------------------------
    async def _trail(self, pos: Position, row: ProtectionRow) -> None:
        if trail_pct(pos, self.cfg.trading) <= 0 or not self.lists.rules(pos.symbol).cancel_replace_allowed \
                and self.lists.rules(pos.symbol).known:
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

    # --- exits pitrader makes -------------------------------------------------------------------
    async def _cancel_row(self, row: ProtectionRow, pos: Position | None, why: str) -> bool:
        """Cancel a live protection; True once all its legs are final on the exchange."""
        legs = [self._legs.get(cid) or await self._leg(cid) for cid in row.leg_ids]
        legs = [o for o in legs if o is not None]
        if all(o.status.is_final for o in legs):
            await self._settle_row(row)
            return True
        log.info("live: cancelling the protection %s of %s #%s: %s", row.list_id or row.stop_id, row.symbol,
                 row.position_id, why)
        self._balance_stale = True
        self._cancelling.add(row.id)
        pos = pos or await self._position(row.position_id)
        try:
            reports = None
            if row.kind == "oco":
                reports = await self.lists.cancel_list(row.symbol, row.list_id)
            if reports is None:  # a lone stop, or an OCO whose stop leg triggered (the list is over, the leg rests)
                for o in legs:
                    if not o.status.is_final:
                        try:
                            await self.gateway.cancel_order(o)
                        except GatewayError as exc:
                            if exc.retryable:
                                raise
                            log.info("live: cancel of %s refused (%s)", o.client_id, exc)
        except GatewayError as exc:
            if exc.retryable:
                log.warning("live: cancel of %s failed (%s); will try again", row.list_id or row.stop_id, exc)
                return False
            log.info("live: cancel of %s refused (%s)", row.list_id or row.stop_id, exc)
            reports = None
        if reports and pos is not None:
            await self._adopt_reports(pos, row, reports, f"cancelled: {why}")
        else:
            for o in legs:
                if not o.status.is_final:
                    await self._refresh_leg(o)
            await self._settle_row(row)
        return all(o.status.is_final for o in legs)

    async def _before_exit(self, pos: Position, reason: str, px: Decimal) -> str | None:
        """Called by ``close_position`` before it sells: None while the exit must wait (a resting
        leg may still fill, or its cancel did not go through), else the exit's reason (a stop-limit
        the market gapped through says so, like paper mode and backtests: ``stop_fill.MISSED``)."""
        rows = self.resting(pos.id)
        if not rows:
            return reason
        grace = GRACE_INTERVALS * self.cfg.trading.monitor_interval_s
        cur = rows[-1]
        if reason == TAKE_PROFIT:
            at_level = cur.target is not None and px >= cur.target
        else:
            at_level = reason in LEVEL_EXITS and px <= cur.stop
        if at_level:  # the exchange's own leg should fill: give it a few monitor intervals
            now = time.monotonic()
            first = self._through.setdefault(pos.id, now)
            if now - first > 4 * grace:  # an old crossing the price came back from: a new one starts now
                first = self._through[pos.id] = now
            if now - first < grace:
                await self._sync_position(pos.id)  # has the leg filled meanwhile?
                return None
            leg = self._legs.get(cur.stop_id)
            if reason != TAKE_PROFIT and (leg is None or leg.filled < cur.amount):
                reason = missed(reason, cur.stop, cur.limit)
            if reason.startswith(MISSED) and pos.id not in self._missed:
                self._missed.add(pos.id)
                self.stop_misses += 1
                await self.store.set_state(MISSES_KEY, self.stop_misses)
                log.warning("live: %s #%s: the price is through the exchange stop %s (limit %s) but it did not fill "
                            "within %.0f s (gapped through its limit?): cancelling it and selling at market",
                            pos.symbol, pos.id, cur.stop, cur.limit, grace)
                audit("stop_limit_miss", symbol=pos.symbol, position=pos.id, stop=cur.stop, limit=cur.limit, price=px)
        ok = True
        for row in rows:
            ok = await self._cancel_row(row, pos, f"exit: {reason}") and ok
        if ok:
            self._through.pop(pos.id, None)
        return reason if ok else None
