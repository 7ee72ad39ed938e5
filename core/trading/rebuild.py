"""Rebuild a live state database from the exchange's own records (after restoring an old backup).

A backup is hours old when the SD card dies; the exchange knows what happened since. Our client
order ids are deterministic (``pt<tag>-<position>-<e|x><attempt>``, the tag persisted in the
database), so every order placed after the backup can be looked up by id: the next exit
attempts of the positions the backup holds, and entries of the position ids after the backup's
last one, on the symbols whose trades since the backup's last fill name orders the database does
not know (plus our open orders, listed directly). What is found is inserted as "submitted"
orders with their positions (the ids the client ids carry; the id counter moved past them, so a
new position never reuses an id), and then the live executor's own start-up reconciliation
fetches each order, records its fills once, and settles or closes the positions, exactly as
after any restart. A rebuilt position gets the configured stop and take-profit around its
entry price (the strategy's own levels were in the lost rows).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from decimal import Decimal

from core.config import Config
from core.exchange.gateway import ExchangeGateway
from core.clock import Clock
from core.models import BUY, SELL, Order, OrderStatus, Position, PositionStatus
from core.store.state import Store
from core.trading.executor import client_order_id
from core.trading.reconcile import TAG_KEY

log = logging.getLogger(__name__)

_CID = re.compile(r"^pt(?P<tag>[0-9a-zA-Z]+)-(?P<pid>\d+)-(?P<kind>[ex])(?P<n>\d+)$")
GAP = 5  # consecutive ids not found before the search stops
HUGE = Decimal(10) ** 30  # a probe's amount: whatever the exchange filled fits under it


class NothingToRebuild(Exception):
    """No live order was ever placed from this database (no order tag)."""


@dataclass
class RebuildReport:
    symbols: list[str] = field(default_factory=list)
    orders: list[str] = field(default_factory=list)  # client ids added
    positions: list[int] = field(default_factory=list)  # position ids added
    fills_before: int = 0
    fills_after: int = 0
    open_positions: int = 0
    unmatched_orders: dict[str, list[str]] = field(default_factory=dict)  # symbol -> exchange ids not ours


def parse_client_id(cid: str | None, tag: str) -> tuple[int, str, int] | None:
    m = _CID.match(cid or "")
    if not m or m["tag"] != tag:
        return None
    return int(m["pid"]), "entry" if m["kind"] == "e" else "exit", int(m["n"])


async def rebuild(cfg: Config, store: Store, gateway: ExchangeGateway, clock: Clock,
                  all_symbols: bool = False) -> RebuildReport:
    """See the module doc. The caller makes sure no service is running on ``store``."""
    from core.trading.live import LiveExecutor

    tag = await store.get_state(TAG_KEY)
    if not tag:
        raise NothingToRebuild("this database never placed a live order (no order tag): nothing to rebuild")
    tag = str(tag)
    report = RebuildReport()
    markets = await gateway.load_markets()
    quote = cfg.universe.quote
    positions = await store.positions()
    fills = await store.bot_fills()
    report.fills_before = len(fills)
    since = max((f.ts_ms for f in fills), default=None)
    max_pid = max((p.id for p in positions), default=0)
    symbols = {f.symbol for f in fills} | {p.symbol for p in positions}
    found: dict[str, Order] = {}

    for r in await gateway.fetch_open_orders():
        parsed = parse_client_id(r.client_id, tag)
        if parsed and await store.get_order(r.client_id) is None:
            pid, intent, _ = parsed
            found[r.client_id] = replace(r, intent=intent, position_id=pid, status=OrderStatus.SUBMITTED)
        symbols.add(r.symbol)
    for asset, amount in (await gateway.fetch_balance()).items():
        if amount > 0 and f"{asset}/{quote}" in markets:
            symbols.add(f"{asset}/{quote}")
    if all_symbols:
        symbols |= {s for s in markets if s.endswith("/" + quote)}
    symbols &= set(markets)
    report.symbols = sorted(symbols)

    unknown: dict[str, dict[str, int]] = {}  # symbol -> exchange order id -> first trade time
    for sym in report.symbols:
        for t in await gateway.fetch_my_trades(sym, since_ms=since):
            if not t.order_id or await store.has_fill(sym, t.trade_id):
                continue
            if await store.order_for_trade(sym, t.order_id) is not None:
                continue  # an order the database knows: the reconciliation below records its fills
            seen = unknown.setdefault(sym, {})
            seen[t.order_id] = min(seen.get(t.order_id, t.ts_ms), t.ts_ms)
    resolved = {o.exchange_id for o in found.values()}
    now = clock.now_ms()

    async def probe(sym: str, pid: int, intent: str, n: int) -> Order | None:
        cid = client_order_id(tag, pid, intent, n)
        if cid in found:
            return found[cid]
        template = Order(client_id=cid, symbol=sym, side=BUY if intent == "entry" else SELL, type="market",
                         amount=HUGE, price=None, intent=intent, position_id=pid, created_ms=now, updated_ms=now)
        o = await gateway.fetch_order(template)
        if o is None or (o.status.is_final and o.filled <= 0):
            return None if o is None else o  # seen (the id is taken) but carries nothing
        return o

    def keep(o: Order, sym: str) -> None:
        first = unknown.get(sym, {}).get(o.exchange_id)
        amount = o.amount if o.amount < HUGE else o.filled
        found[o.client_id] = replace(o, amount=amount, status=OrderStatus.SUBMITTED, filled=Decimal(0),
                                     average=None, created_ms=first or o.created_ms, updated_ms=now)
        resolved.add(o.exchange_id)

    async def exits(sym: str, pid: int, start: int) -> None:
        n, misses = start, 0
        while misses < GAP:
            o = await probe(sym, pid, "exit", n)
            if o is None:
                misses += 1
            else:
                misses = 0
                if o.filled > 0 or not o.status.is_final:
                    keep(o, sym)
            n += 1

    for p in positions:  # exits placed after the backup for the positions it holds open
        if p.status != PositionStatus.CLOSED:
            await exits(p.symbol, p.id, await store.exit_attempts(p.id) + 1)
    highest_seen = max([max_pid] + [o.position_id or 0 for o in found.values()])
    new_positions: dict[int, Position] = {}
    pid, misses = max_pid + 1, 0
    candidates = sorted(set(unknown) | {o.symbol for o in found.values()})
    while candidates and (misses < GAP or pid <= highest_seen):
        if misses >= GAP and all(x in resolved for ids in unknown.values() for x in ids):
            break
        hit = None
        for sym in candidates:
            o = await probe(sym, pid, "entry", 1)
            if o is not None:
                hit = (sym, o)
                break
        if hit is None:
            misses += 1
        else:
            misses = 0
            sym, o = hit
            highest_seen = max(highest_seen, pid)
            if o.filled > 0 or not o.status.is_final:
                keep(o, sym)
                entry = o.average or o.price or Decimal(1)
                t = cfg.trading
                new_positions[pid] = Position(
                    symbol=sym, strategy="rebuilt", amount=Decimal(0), entry_price=entry,
                    stop=entry * (1 - Decimal(str(t.stop_loss_pct))), target=entry * (1 + Decimal(str(t.take_profit_pct))),
                    opened_ms=found[o.client_id].created_ms, id=pid, highest=entry,
                    trail_pct=Decimal(str(t.trailing_stop_pct)), reason="rebuilt from the exchange's records")
            await exits(sym, pid, 1)
        pid += 1

    for sym, ids in unknown.items():
        rest = sorted(x for x in ids if x not in resolved)
        if rest:
            report.unmatched_orders[sym] = rest
            log.warning("rebuild: %d order(s) on %s since the backup are not this database's (placed by hand or "
                        "by another bot): not recorded (%s)", len(rest), sym, ", ".join(rest[:5]))
    orders = [o for o in found.values() if o.position_id in new_positions or o.position_id in {p.id for p in positions}]
    closing = {o.position_id: (o.reason or "exit found on the exchange")[:200] for o in orders if o.intent == "exit"}
    for pid_, pos in new_positions.items():
        if pid_ in closing:
            pos.status, pos.exit_reason = PositionStatus.CLOSING, closing[pid_]
    await store.adopt(list(new_positions.values()), orders, reserve_position_id=highest_seen, closing=closing)
    report.orders = sorted(o.client_id for o in orders)
    report.positions = sorted(new_positions)
    for o in orders:
        log.warning("rebuild: order %s (%s %s, position #%s) was missing from the database: added", o.client_id,
                    o.side, o.symbol, o.position_id)

    executor = LiveExecutor(cfg, store, gateway, clock)
    await executor.start()  # the normal reconciliation: each order fetched, its fills recorded once
    report.fills_after = len(await store.bot_fills())
    report.open_positions = len([p for p in await store.positions("open")])
    return report
