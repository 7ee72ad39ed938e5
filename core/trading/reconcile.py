"""Start-up reconciliation of the live executor: the store against what the exchange says.

Order states, fills made while pitrader was down, open orders and balances nobody here accounts
for; every surprise is logged at WARNING, holdings that are not ours are left alone. A mix-in of
``LiveExecutor`` (``core.trading.live``), kept apart from the order life cycle it relies on
(``_refresh``, ``_settle_position``, ``_refresh_balance``, ``record``).
"""
from __future__ import annotations

import logging
import secrets as _secrets
from dataclasses import replace
from decimal import Decimal

from core.exchange.gateway import GatewayError
from core.models import BUY, SELL
from core.trading.protection_placement import is_target_leg

log = logging.getLogger("core.trading.live")  # one logger for the live executor, whichever module speaks

ZERO = Decimal(0)
TAG_KEY = "order_tag"
FLAGGED_KEY = "foreign_trades_seen"  # trades not ours, already reported once


def short(exc: BaseException, limit: int = 200) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[:limit - 3] + "..."


class Reconciliation:
    """Reconciliation steps of ``LiveExecutor`` (see the module doc)."""

    async def start(self) -> None:
        client = getattr(self.gateway, "exchange", None)  # the ccxt client knows whether BINANCE_TESTNET applied
        testnet = bool(self.cfg.exchange.testnet or getattr(client, "isSandboxModeEnabled", False))
        log.warning("LIVE trading on %s%s: real orders will be placed%s", self.cfg.exchange.id,
                    f" via {self.cfg.exchange.api_url}" if self.cfg.exchange.api_url else "",
                    " on the TESTNET" if testnet else " with REAL funds (not the testnet)")
        self.tag = await self._tag()
        await self._load_positions()
        for o in await self.store.open_orders():
            self._orders[o.client_id] = o
        for pid in list(self._open):
            for o in await self._orders_of(pid):
                if o.status.is_final and o.filled > await self._recorded(o):
                    self._orders[o.client_id] = o
        await self.reconcile()

    async def _tag(self) -> str:
        tag = await self.store.get_state(TAG_KEY)
        if not tag:
            tag = _secrets.token_hex(3)
            await self.store.set_state(TAG_KEY, tag)
        return str(tag)

    async def reconcile(self) -> None:
        log.info("live: reconciling with the exchange: %d orders to check, %d open positions",
                 len(self._orders), len(self._open))
        in_flight = {o.symbol for o in self._orders.values()}
        for o in list(self._orders.values()):
            await self._refresh(o, at_start=True)
        await self._trades_while_down(in_flight)
        await self._foreign_orders()
        await self._check_balances()
        for pos in list(self._open.values()):
            await self._settle_position(pos)
        log.info("live: reconciliation done: %d open positions, %d orders in flight", len(self._open),
                 sum(1 for o in self._orders.values() if not o.status.is_final))

    async def _trades_while_down(self, symbols: set[str]) -> None:
        """Trades since our last recorded fill on the symbols that had orders in flight (only those
        can have bot fills we missed): ours get recorded once, anyone else's are flagged once.
        Holdings changed by hand elsewhere show up in the balance check."""
        flagged = set(await self.store.get_state(FLAGGED_KEY, []) or [])
        before = len(flagged)
        for sym in sorted(symbols):
            try:
                page = await self.gateway.fetch_my_trades(sym, since_ms=await self._last_fill_ts(sym))
            except GatewayError as exc:
                log.warning("live: could not fetch %s trades to reconcile (%s); will look again with the orders",
                            sym, short(exc))
                continue
            trades = {t.trade_id: t for t in page if self._valid_fill(t, sym)}
            for t in sorted(trades.values(), key=lambda t: (t.ts_ms, t.trade_id)):
                if await self.store.has_fill(sym, t.trade_id):
                    continue
                o = await self.store.order_for_trade(sym, t.order_id) if t.order_id else None
                if o is None:
                    key = f"{sym}:{t.trade_id}"
                    if key not in flagged:
                        flagged.add(key)
                        log.warning("live: trade %s on %s (%s %s @ %s) was not made by this pitrader: not recorded "
                                    "as a bot fill (use `pitrader tax import` if it belongs in the ledger)",
                                    t.trade_id, sym, t.side, t.quantity, t.price)
                    continue
                pos = await self._position(o.position_id)
                log.warning("live: fill %s of order %s (%s %s %s @ %s) was not recorded before the restart: "
                            "recorded now", t.trade_id, o.client_id, t.side, t.quantity, sym, t.price)
                if pos is not None:
                    await self.record(o, pos, [t], detail="fill found at restart")
                else:
                    async with self.store.transaction() as conn:
                        await self.store.add_fill(replace(t, order_id=o.client_id), self.clock.now_ms(), conn)
        if len(flagged) != before:
            await self.store.set_state(FLAGGED_KEY, sorted(flagged)[-2000:])

    async def _foreign_orders(self) -> None:
        try:
            remote = await self.gateway.fetch_open_orders()
        except GatewayError as exc:
            log.warning("live: could not list the exchange's open orders (%s): orders placed by hand are not "
                        "checked this time", short(exc))
            return
        mine = f"pt{self.tag}-"
        for r in remote:
            if r.client_id and await self.store.get_order(r.client_id) is not None:
                continue
            if r.client_id and r.client_id.startswith(mine):
                log.warning("live: open order %s on %s carries this database's id prefix but is not in the store: "
                            "left alone; check it on the exchange", r.client_id, r.symbol)
            else:
                log.warning("live: open order %s on %s (%s %s) was not placed by this pitrader: left alone; "
                            "what it reserves is not available to pitrader", r.client_id or r.exchange_id, r.symbol,
                            r.side, r.amount)

    async def _bot_holdings(self) -> dict[str, Decimal]:
        """Base amounts the bot's own fills left on the account (open positions plus unsellable dust)."""
        out: dict[str, Decimal] = {}
        for f in await self.store.bot_fills():
            base = f.symbol.split("/")[0]
            q = f.quantity if f.side == BUY else -f.quantity
            out[base] = out.get(base, ZERO) + q - (f.fee if f.fee_asset == base else ZERO)
        return out

    async def _check_balances(self) -> None:
        if not await self._refresh_balance(force=True):
            log.warning("live: balances unavailable: positions not checked against the account this time")
            return
        held: dict[str, Decimal] = {}
        for p in self._open.values():
            held[p.base] = held.get(p.base, ZERO) + max(self._remaining.get(p.id, ZERO), ZERO)
        locked: dict[str, Decimal] = {}
        for o in self._orders.values():
            if o.side == SELL and not o.status.is_final and not is_target_leg(o.client_id):  # OCO: one lock
                base = o.symbol.split("/")[0]
                locked[base] = locked.get(base, ZERO) + o.amount - o.filled
        bot = await self._bot_holdings()
        for base in sorted(set(held) | {a for a, v in self.balance.items() if v > 0 and a != self.quote}):
            m = self.markets.get(f"{base}/{self.quote}")
            if m is None and base not in held:
                continue
            step = (m.amount_step if m else None) or ZERO
            have = self.balance.get(base, ZERO) + locked.get(base, ZERO)
            expect = held.get(base, ZERO)
            if have + step < expect:
                log.warning("live: positions on %s hold %s but the account has %s %s: sold or moved outside "
                            "pitrader?", base, expect, have, base)
                if have <= 0:
                    for p in [p for p in self._open.values() if p.base == base and self._remaining.get(p.id, ZERO) > 0]:
                        px = self.prices.get(p.symbol) or p.entry_price
                        await self.close_unfilled(p, "balance_missing", px, f"the account holds no {base}")
                else:
                    log.warning("live: %s positions will sell what the account holds when they exit", base)
            elif have > max(expect, bot.get(base, ZERO)) + step:
                extra = have - max(expect, bot.get(base, ZERO))
                what = "more than pitrader's positions" if expect > 0 else "that no pitrader position accounts for"
                log.warning("live: the account holds %s %s, %s %s: the extra %s is left alone (not traded, not in "
                            "equity)", have, base, what, f"({expect})" if expect > 0 else "", extra)
