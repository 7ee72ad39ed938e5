"""Entry sizing: risk-based, then every cap; the smallest binds, then the exchange's rules.

The amount that loses ``risk.risk_per_trade_pct`` of equity if the stop is hit, capped by
``trading.position_size_pct`` of equity, the room left under ``risk.max_asset_exposure_pct`` for
the base asset, and the free cash (with fee and, for market orders, slippage headroom).
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
    binding: str  # which cap bound: risk, position_size, exposure or cash


def caps(cfg: Config, portfolio: Portfolio, market: Market, ref: Decimal, stop: Decimal) -> dict[str, Decimal]:
    """Quote value each limit allows for an entry at ``ref`` with ``stop``."""
    r, t, equity = cfg.risk, cfg.trading, portfolio.equity
    fee = Decimal(str(cfg.paper.fee_pct))
    headroom = (1 + fee) * (1 if t.order_type == "limit" else 1 + Decimal(str(r.max_slippage_pct)))
    return {
        "risk": equity * Decimal(str(r.risk_per_trade_pct)) * ref / (ref - stop),
        "position_size": equity * Decimal(str(t.position_size_pct)),
        "exposure": equity * Decimal(str(r.max_asset_exposure_pct)) - portfolio.exposure(market.base),
        "cash": portfolio.cash / headroom,
    }


def size_entry(cfg: Config, portfolio: Portfolio, market: Market, ref: Decimal,
               stop: Decimal) -> Size | tuple[str, str]:
    """The entry's size, or (check, reason) when no order fits."""
    equity = portfolio.equity
    if equity <= 0:
        return "equity", f"equity is {equity}"
    allowed = caps(cfg, portfolio, market, ref, stop)
    binding = min(allowed, key=lambda k: allowed[k])
    value = allowed[binding]
    if value <= 0:
        why = {"exposure": f"{market.base} exposure {fmt_dec(portfolio.exposure(market.base), 2)} already at "
                           f"risk.max_asset_exposure_pct ({fmt_pct(cfg.risk.max_asset_exposure_pct)} of equity)",
               "cash": f"no free {market.quote} (cash {fmt_dec(portfolio.cash, 2)})"}.get(binding, "no room")
        return binding, why
    order = conform_order(market, BUY, value / ref, ref)
    if isinstance(order, Refusal):
        check = binding if binding in ("cash", "exposure") else "exchange_rules"
        return check, f"size {fmt_dec(value, 2)} {market.quote} (bound by {binding}): {order.reason}"
    return Size(order, value, binding)
