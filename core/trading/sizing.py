"""Entry sizing: risk-based, then every cap; the smallest binds, then the exchange's rules.

The amount that loses ``risk.risk_per_trade_pct`` of equity if the stop is hit, capped by
``trading.position_size_pct`` of equity, the room left under ``risk.max_asset_exposure_pct`` for
the base asset, the free cash (with fee and, for market orders, slippage headroom), and the
loss budget (``budget``): what a stop-out of every open position and of this entry, fees,
slippage and (paper) half the spread included, may still cost before the day's loss reaches ``risk.max_daily_loss_pct`` or
the drawdown reaches ``risk.max_drawdown_pct``. That makes those limits caps rather than
triggers: only a price gapping through a stop can take the account beyond them.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from core.config import Config
from core.models import BUY, Market
from core.trading.portfolio import Portfolio
from core.trading.rules import Refusal, ValidOrder, conform_order, fmt_dec, fmt_pct


@dataclass(frozen=True, slots=True)
class Size:
    order: ValidOrder  # conformed: amount on the lot step, price on the tick
    value: Decimal  # the quote value the binding cap allowed, before exchange rounding
    binding: str  # which cap bound: risk, position_size, exposure, cash or budget


def exit_costs(cfg: Config) -> tuple[Decimal, Decimal]:
    """(fee, slippage) fractions a stop-out pays: the fee, and in paper mode the paper slippage
    compounded with half of ``paper.spread_pct`` (what a fill without a book pays; the entry's
    factor exactly, the exit's a bound), or live the stop-limit's offset below its stop (the worst
    a resting stop-limit fills at)."""
    if cfg.mode != "paper":
        return Decimal(str(cfg.paper.fee_pct)), Decimal(str(cfg.trading.stop_limit_offset_pct))
    half, slip = Decimal(str(cfg.paper.spread_pct)) / 2, Decimal(str(cfg.paper.slippage_pct))
    return Decimal(str(cfg.paper.fee_pct)), half + slip + half * slip


def stop_loss_fraction(cfg: Config, ref: Decimal, stop: Decimal) -> Decimal:
    """Loss per quote unit bought at ``ref`` if the stop fills: price move, entry and exit fees and
    slippage (market entry), with the exit slipping below the stop."""
    fee, slip = exit_costs(cfg)
    entry_slip = 0 if cfg.trading.order_type == "limit" else slip
    return (1 + fee) * (1 + entry_slip) - stop * (1 - fee - slip) / ref


def open_stop_loss(cfg: Config, portfolio: Portfolio) -> Decimal:
    """What stopping out every open position would still cost from here (marked prices)."""
    fee, slip = exit_costs(cfg)
    total = Decimal(0)
    for p in portfolio.positions:
        price = portfolio.prices.get(p.symbol, p.entry_price)
        total += max(Decimal(0), p.amount * (price - p.stop * (1 - fee - slip)))
    for value in portfolio.pending.values():  # unfilled entries: assume the widest stop
        total += value * (Decimal(str(cfg.trading.stop_loss_pct)) + 2 * (fee + slip))
    return total


def caps(cfg: Config, portfolio: Portfolio, market: Market, ref: Decimal, stop: Decimal,
         budget: Decimal | None = None) -> dict[str, Decimal]:
    """Quote value each limit allows for an entry at ``ref`` with ``stop``; ``budget`` is the loss
    the day and drawdown caps still allow (None: not checked)."""
    r, t, equity = cfg.risk, cfg.trading, portfolio.equity
    fee = Decimal(str(cfg.paper.fee_pct))
    headroom = (1 + fee) * (1 if t.order_type == "limit" else 1 + Decimal(str(r.max_slippage_pct)))
    out = {
        "risk": equity * Decimal(str(r.risk_per_trade_pct)) * ref / (ref - stop),
        "position_size": equity * Decimal(str(t.position_size_pct)),
        "exposure": equity * Decimal(str(r.max_asset_exposure_pct)) - portfolio.exposure(market.base),
        "cash": portfolio.cash / headroom,
    }
    if budget is not None:
        out["budget"] = (budget - open_stop_loss(cfg, portfolio)) / stop_loss_fraction(cfg, ref, stop)
    return out


def size_entry(cfg: Config, portfolio: Portfolio, market: Market, ref: Decimal,
               stop: Decimal, budget: Decimal | None = None) -> Size | tuple[str, str]:
    """The entry's size, or (check, reason) when no order fits."""
    equity = portfolio.equity
    if equity <= 0:
        return "equity", f"equity is {equity}"
    allowed = caps(cfg, portfolio, market, ref, stop, budget)
    binding = min(allowed, key=lambda k: allowed[k])
    value = allowed[binding]
    if value <= 0:
        why = {"exposure": f"{market.base} exposure {fmt_dec(portfolio.exposure(market.base), 2)} already at "
                           f"risk.max_asset_exposure_pct ({fmt_pct(cfg.risk.max_asset_exposure_pct)} of equity)",
               "cash": f"no free {market.quote} (cash {fmt_dec(portfolio.cash, 2)})",
               "budget": f"a stop-out of the open positions would use the loss left under "
                         f"risk.max_daily_loss_pct / risk.max_drawdown_pct ({fmt_dec(budget or Decimal(0), 2)})"
               }.get(binding, "no room")
        return binding, why
    if binding == "budget" and market.min_cost and value < 2 * market.min_cost:
        # a crumb the loss budget leaves would be dust after a small move: no entry instead
        return binding, (f"the loss left under risk.max_daily_loss_pct / risk.max_drawdown_pct allows "
                         f"{fmt_dec(value, 2)} {market.quote}, under twice the market's minimum order")
    order = conform_order(market, BUY, value / ref, ref)
    if isinstance(order, Refusal):
        check = binding if binding in ("cash", "exposure", "budget") else "exchange_rules"
        return check, f"size {fmt_dec(value, 2)} {market.quote} (bound by {binding}): {order.reason}"
    return Size(order, value, binding)
