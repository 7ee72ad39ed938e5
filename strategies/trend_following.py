"""Trend following: join an established higher-timeframe uptrend while the signal timeframe
pulls back, in a rising market, in a pair that is not among the laggards.

Why: a trend is judged where it is less noisy (the higher timeframe: fast EMA above slow EMA,
close above the fast EMA, ADX showing a trend); buying it in a pullback pays less for the same
trend than buying a fresh high, and at hourly horizons fresh highs are where short-term reversal
bites (measured: breakout entries, on either timeframe, lost to random entries; see
research/README.md). Only the market's leaders: the higher the relative strength required, the
better the trades (whole period, strength_min 0 / 0.3 / 0.7 / 0.85: -7.9 / -4.2 / -2.9 / +3.9 %),
and every walk-forward train window chose the highest. In a falling market
(``MarketState.risk_on`` False) it stands aside.

Required: on the higher timeframe (the signal timeframe when none is configured) EMA
``ema_fast`` above EMA ``ema_slow``, the close above EMA ``ema_fast`` and ADX at least
``adx_min``; the entry (``entry``): ``pullback`` -- on the signal timeframe the close under its
EMA ``pullback_ema`` and the last candle green (the dip is turning), or ``breakout`` -- the
higher timeframe's close above the high of its previous ``breakout_period`` candles; RSI (signal
timeframe) at most ``rsi_max``; relative strength at least ``strength_min``; a risk-on market
(with ``regime_filter``). Score (0..100): 60, plus higher-timeframe ADX from ``adx_min`` to
``adx_full`` (0..20), plus relative strength from ``strength_min`` to 1 (0..20). Stop
``stop_atr`` ATRs below the close, target ``target_atr`` ATRs above it (the risk gate keeps that
reward:risk when it clamps the stop); a trail 9 % under the high lets a trend run, no time limit
(``trailing_stop_pct``, ``max_hold_hours``: chosen by walk-forward, research/README.md 2c).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from core.fields import opt
from strategies.base import ScanInput, Signals, Strategy, last, max_hold_opt, ramp, trailing_stop_opt


@dataclass(frozen=True)
class TrendParams:
    ema_fast: int = opt(20, "higher timeframe: fast EMA period", min=2, max=1000)
    ema_slow: int = opt(50, "higher timeframe: slow EMA period", min=3, max=1000)
    adx_period: int = opt(14, "higher timeframe: ADX period", min=2, max=500)
    adx_min: float = opt(20.0, "higher timeframe: ADX at least this (a trend, not a range)", min=0, max=100)
    adx_full: float = opt(40.0, "higher timeframe: ADX from this on earns all trend-strength points", min=0,
                          max=100)
    entry: str = opt("pullback", "when to join the trend: in a pullback (signal timeframe close under EMA "
                     "pullback_ema, last candle green) or on a breakout (higher timeframe close above the high "
                     "of its previous breakout_period candles)", choices=("pullback", "breakout"))
    breakout_period: int = opt(20, "breakout entry: higher-timeframe candles whose high the close must clear",
                               min=2, max=500)
    pullback_ema: int = opt(20, "signal timeframe: the pullback is a close under this EMA", min=2, max=1000)
    rsi_period: int = opt(14, "RSI period (signal timeframe)", min=2, max=500)
    rsi_max: float = opt(40.0, "RSI (signal timeframe) at most this: how deep the pullback must be", min=1, max=100)
    strength_min: float = opt(0.85, "relative strength (percentile among the scanned pairs, 0..1) a pair needs: "
                              "the market's leaders (chosen by walk-forward, research/README.md)", min=0, max=1)
    regime_filter: bool = opt(True, "stand aside while the market is not risk-on (breadth below half or BTC "
                              "under its trend mean; see strategies.base.MarketState)")
    atr_period: int = opt(14, "ATR period for stop and target (signal timeframe)", min=1, max=500)
    stop_atr: float = opt(2.0, "stop this many ATRs below the close", gt=0, max=50)
    target_atr: float = opt(6.0, "target this many ATRs above the close", gt=0, max=100)
    max_hold_hours: float | None = max_hold_opt(0.0)  # exits: walk-forward, research/README.md section 2c
    trailing_stop_pct: float | None = trailing_stop_opt(0.09)


class TrendFollowing(Strategy):
    Params = TrendParams
    summary = "higher-timeframe uptrend (EMA, ADX), entry in a pullback, in a rising market"
    confirmed = False  # its own higher-timeframe trend test replaces the scanner's confirmation

    @classmethod
    def check_params(cls, p: TrendParams) -> Iterator[tuple[str, str]]:
        if p.ema_fast >= p.ema_slow:
            yield "ema_fast", f"expected less than ema_slow ({p.ema_slow}), got {p.ema_fast}"
        if p.adx_min >= p.adx_full:
            yield "adx_min", f"expected less than adx_full ({p.adx_full:g}), got {p.adx_min:g}"

    def min_candles(self) -> int:
        p = self.params
        return 2 * max(p.pullback_ema, p.rsi_period + 1, p.atr_period + 1)

    def min_higher_candles(self) -> int:
        p = self.params
        # EMAs are seeded by the mean of their first candles (then a margin); ADX needs two periods
        return max(p.ema_slow + 10, 2 * p.adx_period + 10, p.breakout_period + 1)

    def evaluate(self, data: ScanInput) -> Signals:
        p, ind = self.params, data.signal
        hi = data.higher if data.higher is not None else ind
        market = data.regime()
        close = last(ind.close)
        h_close, h_fast, h_slow = last(hi.close), last(hi.ema(p.ema_fast)), last(hi.ema(p.ema_slow))
        h_adx = last(hi.adx(p.adx_period))
        pull = last(ind.ema(p.pullback_ema))
        rsi = last(ind.rsi(p.rsi_period))
        atr = last(ind.atr(p.atr_period))
        strength = market.strength
        trend = (h_fast > h_slow) & (h_close > h_fast) & (h_adx >= p.adx_min)
        if p.entry == "breakout":
            turning = h_close > last(hi.donchian(p.breakout_period)[0])
        else:
            turning = (close < pull) & (close > last(ind.open))
        allowed = trend & turning & (rsi <= p.rsi_max) & (strength >= p.strength_min) & (atr > 0)
        if p.regime_filter:
            allowed &= market.risk_on
        score = 60.0 + 20.0 * ramp(h_adx, p.adx_min, p.adx_full) + 20.0 * ramp(strength, p.strength_min, 1.0)
        score = np.where(allowed, score, 0.0)

        def explain(i: int) -> str:
            entry = (f"{hi.timeframe} close above its {p.breakout_period}-candle high" if p.entry == "breakout"
                     else f"pullback under EMA{p.pullback_ema}, green candle")
            return f"{hi.timeframe} EMA{p.ema_fast}>EMA{p.ema_slow}, ADX {h_adx[i]:.0f}; {entry}, RSI {rsi[i]:.0f}"

        return Signals(score, close - p.stop_atr * atr, close + p.target_atr * atr, explain)
