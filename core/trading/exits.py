"""When to leave a position: stop-loss, trailing stop, take-profit, time limit.

Pure and cheap: the engine calls it every few seconds for each open position with the latest
ticker price. Protective exits win over take-profit when both apply (a gap through both levels
is recorded as the stop it was). Emergency exits on a halt are the engine's decision
(``RiskGate.emergency``), recorded with the reason ``EMERGENCY``.
"""
from __future__ import annotations

from decimal import Decimal

from core.config import TradingConfig
from core.models import Position
from core.timeframes import HOUR_MS

STOP_LOSS, TRAILING_STOP, TAKE_PROFIT, TIME_EXIT, EMERGENCY = (
    "stop_loss", "trailing_stop", "take_profit", "time_exit", "emergency")


def trail_pct(pos: Position, cfg: TradingConfig) -> Decimal:
    """A trail fixed at entry wins, so a reload never loosens an open trade's; a position opened
    without one follows the configured trail (enabling trailing on a reload covers it too)."""
    return pos.trail_pct if pos.trail_pct > 0 else Decimal(str(cfg.trailing_stop_pct))


def trailing_stop(pos: Position, cfg: TradingConfig) -> Decimal | None:
    pct = trail_pct(pos, cfg)
    if pct <= 0 or pos.highest <= 0:
        return None
    return pos.highest * (1 - pct)


def exit_reason(pos: Position, price: Decimal, now_ms: int, cfg: TradingConfig) -> str | None:
    """Why ``pos`` should be closed at ``price`` now, or None. Raises ``pos.highest`` to ``price``."""
    if pos.status != "open" or pos.amount <= 0 or price <= 0:
        return None  # closing already, or an entry order still waiting for its fill
    if price > pos.highest:
        pos.highest = price
    trail = trailing_stop(pos, cfg)
    if trail is not None and trail > pos.stop and price <= trail:
        return TRAILING_STOP
    if price <= pos.stop:
        return STOP_LOSS
    if price >= pos.target:
        return TAKE_PROFIT
    if cfg.max_hold_hours > 0 and now_ms - pos.opened_ms >= cfg.max_hold_hours * HOUR_MS:
        return TIME_EXIT
    return None


def candle_exit(pos: Position, candle: tuple[Decimal, Decimal, Decimal, Decimal], now_ms: int,
                cfg: TradingConfig) -> tuple[str, Decimal] | None:
    """Exit over one closed candle (open, high, low, close) the position held throughout.

    Recorded data has no ticks between closes, but the candle's range says which levels the
    price crossed: a stop is filled at the stop (or at the open when the candle gapped through
    it), a target at the target, instead of wherever the close happens to be. A candle that
    touched both is taken as the stop: the order inside it is unknown, so assume the worse.
    The high raises the trailing stop only for later candles. Returns (reason, price) or None.
    """
    if pos.status != "open" or pos.amount <= 0:
        return None
    o, h, low, c = candle
    trail = trailing_stop(pos, cfg)
    level = pos.stop if trail is None or trail <= pos.stop else trail
    if low <= level:
        return (TRAILING_STOP if level is trail else STOP_LOSS), min(o, level)
    if h >= pos.target:
        return TAKE_PROFIT, max(o, pos.target)
    if h > pos.highest:
        pos.highest = h
    if cfg.max_hold_hours > 0 and now_ms - pos.opened_ms >= cfg.max_hold_hours * HOUR_MS:
        return TIME_EXIT, c
    return None
