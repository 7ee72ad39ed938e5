"""Manual control of the engine: `pitrader close / pause / resume / buy / exclude`.

One ``execute`` for both ways a command arrives: the running service takes it from the command
queue in the state database (``serve``, every monitor interval, inside the engine loop, so it never
races the loop's own orders), and the CLI calls it directly when no service runs. Every action
is logged at WARNING with who asked and goes to the audit log (the engine's ``pause`` /
``resume`` / ``close_symbol`` / ``exclude`` do both; ``buy`` here).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from decimal import Decimal, InvalidOperation

from core.exchange.gateway import GatewayError
from core.log import audit
from core.models import BUY, Opportunity
from core.store import protections as queue
from core.trading.risk import Approval
from core.trading.rules import Refusal, conform_order, fmt_dec

log = logging.getLogger("core.control")

ACTIONS = ("close", "pause", "resume", "buy", "exclude")


class CommandFailed(Exception):
    """A manual command that could not be carried out; the message says why."""


def _dec(text: object, what: str) -> Decimal:
    try:
        d = Decimal(str(text))
    except (InvalidOperation, ValueError):
        raise CommandFailed(f"{what} {text!r} is not a number") from None
    if not d.is_finite() or d <= 0:
        raise CommandFailed(f"{what} must be a positive number")
    return d


def symbol_of(text: str, quote: str) -> str:
    """'eth', 'ETHUSDT', 'ETH/USDT' -> 'ETH/USDT' (the configured quote)."""
    s = text.strip().upper()
    if "/" in s:
        return s
    if s.endswith(quote) and len(s) > len(quote):
        return f"{s[:-len(quote)]}/{quote}"
    return f"{s}/{quote}"


async def execute(engine, action: str, args: dict, who: str) -> str:
    """Carry out one command on ``engine``; returns the outcome, raises ``CommandFailed``."""
    quote = engine.cfg.universe.quote
    if action == "pause":
        return "entries paused (exits go on)" if await engine.pause(who) else "entries were already paused"
    if action == "resume":
        return "entries resumed" if await engine.resume(who) else "entries were not paused"
    if action == "exclude":
        sym = symbol_of(args["symbol"], quote)
        remove = bool(args.get("remove"))
        changed = await engine.exclude(sym, who, remove=remove)
        if remove:
            return f"{sym} may be entered again" if changed else f"{sym} was not excluded"
        return (f"{sym} excluded from new entries (open positions keep their exits)" if changed
                else f"{sym} was already excluded")
    if action == "close":
        symbols = sorted({p.symbol for p in engine.executor.positions if str(p.status) == "open"})
        if not args.get("all"):
            sym = symbol_of(args["symbol"], quote)
            if sym not in symbols:
                raise CommandFailed(f"no open position on {sym}")
            symbols = [sym]
        if not symbols:
            return "no open position to close"
        done = []
        for sym in symbols:
            try:
                n = await engine.close_symbol(sym, who)
            except GatewayError as exc:
                raise CommandFailed(f"{sym}: {exc}") from None
            still = [p for p in engine.executor.positions if p.symbol == sym]
            state = ", ".join(f"#{p.id} {p.status}" for p in still) or "closed"
            done.append(f"{sym}: {n} position(s) ({state})")
        return "; ".join(done)
    if action == "buy":
        return await _buy(engine, args, who)
    raise CommandFailed(f"unknown command {action!r}")


async def _buy(engine, args: dict, who: str) -> str:
    """A manual entry: through the risk gate (``force`` skips its soft checks, never the exchange's
    rules); the size is the quote amount asked, or less when the gate allows less."""
    cfg, quote = engine.cfg, engine.cfg.universe.quote
    sym = symbol_of(args["symbol"], quote)
    spend = _dec(args["quote"], "--quote")
    limit = _dec(args["limit"], "--limit") if args.get("limit") is not None else None
    markets = engine.markets or await engine.gateway.load_markets()
    market = markets.get(sym)
    if market is None:
        raise CommandFailed(f"{sym} is not listed on the exchange")
    if sym in engine.excluded and not args.get("force"):
        raise CommandFailed(f"{sym} is excluded (`pitrader exclude --remove {sym}`, or --force)")
    prices = await engine.prices({sym})
    if sym not in prices:
        raise CommandFailed(f"no current price for {sym}")
    px = limit or Decimal(str(prices[sym]))
    t = cfg.trading
    stop, target = px * (1 - Decimal(str(t.stop_loss_pct))), px * (1 + Decimal(str(t.take_profit_pct)))
    opp = Opportunity(sym, "manual", BUY, 100.0, float(px), float(stop), float(target), f"manual buy by {who}")
    portfolio = await engine.executor.portfolio(prices)
    if args.get("force"):
        order = conform_order(market, BUY, spend / px, px)  # the exchange's rules are never skipped
        if isinstance(order, Refusal):
            raise CommandFailed(order.reason)
        if order.cost > portfolio.cash:
            raise CommandFailed(f"{fmt_dec(order.cost, 2)} {quote} asked, {fmt_dec(portfolio.cash, 2)} available")
        approval = Approval(order.amount, order.price, stop, target, f"manual buy by {who} (forced)")
    else:
        try:
            book = await engine.gateway.fetch_order_book(sym)
        except GatewayError:
            book = None
        decision = await engine.risk.evaluate(opp, market, book, portfolio)
        if not isinstance(decision, Approval):
            raise CommandFailed(f"refused by the risk gate ({decision.check}): {decision.reason} (--force skips "
                                "the soft checks)")
        want = conform_order(market, BUY, spend / px, px)
        if isinstance(want, Refusal):
            raise CommandFailed(want.reason)
        amount = min(want.amount, decision.amount)
        approval = replace(decision, amount=amount, price=px if limit else decision.price,
                           reason=f"manual buy by {who}: {decision.reason}")
    log.warning("manual buy of %s %s (~%s %s%s) by %s", approval.amount, sym, fmt_dec(approval.amount * px, 2), quote,
                f", limit {limit}" if limit else "", who)
    audit("manual_buy", symbol=sym, amount=approval.amount, quote=spend, limit=limit, by=who,
          forced=bool(args.get("force")))
    saved = engine.executor.cfg
    if limit is not None:
        engine.executor.update_config(replace(saved, trading=replace(saved.trading, order_type="limit")))
    try:
        pos = await engine.executor.open_position(opp, approval, None)
    finally:
        engine.executor.update_config(saved)
    if pos is None:
        raise CommandFailed(f"{sym}: the exchange did not take the order (see the log)")
    return (f"bought {sym}: position #{pos.id}, {pos.amount} {market.base} @ {pos.entry_price} "
            f"(stop {fmt_dec(stop, 8)}, target {fmt_dec(target, 8)}, {pos.status})")


async def serve(engine) -> None:
    """The running service's side of the queue: each queued command once, outcome written back."""
    try:
        todo = await queue.take_commands(engine.store.db)
    except Exception as exc:  # noqa: BLE001 - the queue must never stop the loop
        log.warning("manual command queue unreadable (%s)", exc)
        return
    for cid, action, args, who in todo:
        try:
            outcome, ok = await execute(engine, action, args, who), True
        except CommandFailed as exc:
            outcome, ok = str(exc), False
        except GatewayError as exc:
            outcome, ok = f"exchange: {exc}", False
        if ok:
            log.info("manual command %s by %s done: %s", action, who, outcome)
        else:
            log.warning("manual command %s %s by %s failed: %s", action, args, who, outcome)
        await queue.finish_command(engine.store.db, cid, ok, outcome)
