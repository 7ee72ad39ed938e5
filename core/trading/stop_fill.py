"""What a resting SELL stop-limit does over one candle: the model paper mode and backtests use to
behave like the exchange-side stops of live mode (core/trading/protection.py).

Binance triggers a STOP_LOSS_LIMIT when the price reaches its stop, then it rests as a limit sell:
it fills at once when the market is still at or above the limit, later if the price comes back up
to the limit, and never if the market gapped through the limit and stayed below it (a *miss*: the
emergency path then sells at market). Inside a candle the path is open, low, high, close when it
rises and open, high, low, close when it falls (the emulator's convention).
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class StopOutcome:
    triggered: bool
    price: Decimal | None = None  # the fill price; None while not triggered or when missed

    @property
    def missed(self) -> bool:
        return self.triggered and self.price is None


def stop_limit_outcome(candle: tuple[Decimal, Decimal, Decimal, Decimal], stop: Decimal,
                       limit: Decimal) -> StopOutcome:
    """The outcome of a SELL stop-limit (``limit`` <= ``stop``) resting through ``candle`` (o, h, l, c)."""
    o, h, low, c = candle
    if o <= stop:  # gapped to (or through) the stop: triggered at the open
        if o >= limit:
            return StopOutcome(True, o)  # sells at once, at the market (at or above the limit)
        path_after = (low, h, c) if c >= o else (h, low, c)
        return StopOutcome(True, limit) if any(p >= limit for p in path_after) else StopOutcome(True, None)
    if low <= stop:  # falls through the stop during the candle: triggered at the stop, fills there
        return StopOutcome(True, stop)
    return StopOutcome(False)


MISSED = "stop_limit_missed"  # exit reason prefix: the stop-limit gapped through, sold at market instead


def protective_levels(pos, cfg) -> tuple[Decimal, Decimal]:
    """The stop the exchange-side stop-limit of ``pos`` rests at (its stop, or the trail when higher) and
    its limit (``trading.stop_limit_offset_pct`` below)."""
    from core.trading.exits import trailing_stop

    trail = trailing_stop(pos, cfg)
    level = pos.stop if trail is None or trail <= pos.stop else trail
    return level, level * (1 - Decimal(str(cfg.stop_limit_offset_pct)))


def missed(reason: str, level: Decimal, limit: Decimal) -> str:
    return f"{MISSED}: {reason} at {level.normalize():f}, limit {limit.normalize():f}; sold at market"


def resting_exit(pos, candle: tuple[Decimal, Decimal, Decimal, Decimal], decision: tuple[str, Decimal] | None,
                 cfg) -> tuple[str, Decimal] | None:
    """Replay / backtest: ``candle_exit``'s decision as the resting exchange orders of live mode make it
    (``trading.exchange_stops``): the stop-limit fills at its stop, at the open when the market opened
    between stop and limit, at its limit when the price came back up to it, and misses when the market
    gapped through the limit and stayed below (then the emergency path sells at the open, the first
    price the monitor sees); an OCO's take-profit is a resting maker order and fills at the target."""
    from core.trading.exits import STOP_LOSS, TAKE_PROFIT, TRAILING_STOP

    if decision is None or cfg.exchange_stops == "off":
        return decision
    reason, price = decision
    if reason in (STOP_LOSS, TRAILING_STOP):
        level, limit = protective_levels(pos, cfg)
        out = stop_limit_outcome(candle, level, limit)
        if out.price is not None:
            return reason, out.price
        if out.missed:
            return missed(reason, level, limit), candle[0]
        return decision
    if reason == TAKE_PROFIT and cfg.exchange_stops == "oco":
        return reason, pos.target
    return decision
