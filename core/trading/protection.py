"""Exchange-side protection of live positions: an OCO (take-profit + stop-limit) or a stop-limit
alone rests on the exchange for every open position, so a Pi that loses power, network or its
process leaves no position without a stop.

Life cycle of one placement (a ``protections`` row, ``TRANSITIONS``)::

    new ──(exchange acknowledged)──> active ──(a leg filled / cancelled / replaced)──> done
     └──(refused, or never reached the exchange)──> failed

- **Placement** (``protection_placement``: ``_protect_missing``, every monitor interval): a
  position that holds base, whose entry is no longer in flight and that has no live protection
  gets one. The row and its legs
  (ordinary ``orders`` rows: type limit, intent exit, our client ids ``pt<tag>-<pos>-l|s|t<row>``)
  are persisted *before* the request; an unclear answer is resolved by looking the legs up by
  those ids, like every other order. Quantity: what the account holds for the position after fees
  (``min(settled remaining, free balance)``), conformed to every filter
  (``core.trading.rules.conform_protection``). A refusal because the price is already through
  the stop (-2010) sells at market at once.
- **Trailing** (``protection_placement``: ``_trail``): at most every ``trading.trail_update_s``
  the stop moves up with one ``order/cancelReplace`` (STOP_ON_FAILURE) on the stop leg. For an
  OCO Binance cancels the whole list and places the new stop-limit in the same request, so the
  position is never without a resting stop between two requests; the take-profit then leaves
  the exchange and the monitor's target check (a pitrader exit) takes it. A cancel that fails places nothing (the stop filled).
- **Exits pitrader makes itself** (``_before_exit``, called by ``close_position``): cancel the live
  protection first (DELETE orderList / cancel the stop), record whatever it filled, then sell what
  is left. A monitor stop or target hit while a leg rests waits ``GRACE_INTERVALS`` monitor
  intervals for the exchange to fill it; a stop-limit gapped through its limit stays unfilled on
  the exchange, and then the emergency path cancels it and sells at market (counted as a miss).
- **Reconciliation** (``_sync_protection``, at start and on every poll): a leg that filled closes
  the position with that fill (recorded once through the order path, so it reaches the ledger);
  the other leg is gone (OCO) or cancelled; a list found cancelled or expired with nothing filled
  leaves the position unprotected, and the next placement pass protects it again. At start, a
  position left open by a process stopped between such a fill and its close is settled the same
  way (``_resume_exchange_exits``).
"""
from __future__ import annotations

import logging
import time
from decimal import Decimal

from core.exchange.ccxt_orders import order_lists
from core.exchange.gateway import GatewayError
from core.log import audit
from core.models import Order, OrderStatus, Position, PositionStatus
from core.store import protections as db
from core.store.protections import ProtectionRow
from core.trading.exits import STOP_LOSS, TAKE_PROFIT, TRAILING_STOP
from core.trading.protection_placement import ZERO, Placement, leg_kind
from core.trading.stop_fill import MISSED, missed

log = logging.getLogger("core.trading.live")

TRANSITIONS = {"new": {"active", "done", "failed"}, "active": {"done"}, "done": set(), "failed": set()}
GRACE_INTERVALS = 3  # monitor intervals a resting leg gets to fill after the monitor saw its level
MISSES_KEY = "stop_limit_misses"
LEVEL_EXITS = (STOP_LOSS, TRAILING_STOP, TAKE_PROFIT)


class Protection(Placement):
    """Mix-in of ``LiveExecutor`` (see the module doc): the rows' life cycle, reconciliation and
    the exits pitrader makes itself; placing and trailing are ``Placement``'s. Relies on the
    executor's ``_refresh``, ``_apply``, ``_cancel``, ``_settlement``, ``_refresh_balance``,
    ``close_position``."""

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

    # --- rows ---------------------------------------------------------------------------------------
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
        await self._resume_exchange_exits()
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

    async def _resume_exchange_exits(self) -> None:
        """Start-up: a position still open although one of its protections is done with a leg
        filled was stopped inside ``_exchange_exit`` (the fill and the row were saved, the close
        was not). Settle it as that would have: its exit reason, the fill already recorded, the
        rest sold or, below the exchange's minimums, left as dust. Left open, it would count
        against ``max_open_positions`` and its dust would be refused every protection pass."""
        for pos in [p for p in self._open.values() if p.status == PositionStatus.OPEN and not self._prot.get(p.id)]:
            for row in reversed(await db.of_position(self.store.db, pos.id)):
                if row.status != "done":
                    continue
                legs = [o for cid in row.leg_ids if (o := await self.store.get_order(cid)) is not None]
                if sum((o.filled for o in legs), ZERO) > 0:
                    await self._exchange_exit(pos, row, legs, at_start=True, resumed=True)
                    break

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

    async def _exchange_exit(self, pos: Position, row: ProtectionRow, legs: list[Order], at_start: bool,
                             resumed: bool = False) -> None:
        """A leg filled on the exchange: the position exits with that fill (already recorded).
        ``resumed``: the fill was seen before a restart that interrupted this (``_resume_exchange_exits``)."""
        if pos.id not in self._open or pos.status == PositionStatus.CLOSED:
            return
        won = max(legs, key=lambda o: o.filled)
        kind = leg_kind(won.client_id)
        reason = TAKE_PROFIT if kind == "target" else (TRAILING_STOP if row.stop > pos.stop else STOP_LOSS)
        when = ("; seen before the restart, the position was not closed yet: closing it now" if resumed
                else " while pitrader was down" if at_start else "")
        (log.warning if at_start else log.info)(
            "live: %s #%s: the exchange's %s leg %s filled %s @ %s%s", pos.symbol, pos.id, kind, won.client_id,
            won.filled, won.average, when)
        audit("protection_fill", symbol=pos.symbol, position=pos.id, leg=won.client_id, filled=won.filled,
              reason=reason, **({"resumed": True} if resumed else {}))  # resumed: may repeat the one before it
        self._through.pop(pos.id, None)
        if pos.status == PositionStatus.OPEN:
            pos.transition(PositionStatus.CLOSING)
            pos.exit_reason = pos.exit_reason or reason
        self._exit_after.pop(pos.id, None)
        self._balance_stale = True
        await self._settle_position(pos)

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
