"""Trend following: ride an uptrend (fast EMA above slow EMA), best soon after the cross,
with trend strength (ADX) and an RSI that is strong but not overbought.

Required: EMA fast > slow, and (with ``regime_filter``) a risk-on market. Score (0..100): the
cross happened within ``cross_window`` candles (20 for a cross on the last candle, falling
linearly to 0 at the window's end); close above the fast EMA (15); MACD histogram positive
(10) and rising (10) -- points, not requirements, so a trend with a positive but falling
histogram can still pass on the other points; ADX from ``adx_min`` to ``adx_full`` (0..25);
RSI within ``rsi_min..rsi_max`` (20). Stop and target are ATR multiples from the close.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from core.fields import opt
from strategies.base import ScanInput, Signals, Strategy, flag, last, ramp


@dataclass(frozen=True)
class TrendParams:
    ema_fast: int = opt(20, "fast EMA period", min=2, max=1000)
    ema_slow: int = opt(50, "slow EMA period", min=3, max=1000)
    cross_window: int = opt(48, "a fast-over-slow cross within this many candles earns cross points",
                            min=1, max=1000)
    macd_fast: int = opt(12, "MACD fast EMA period", min=2, max=500)
    macd_slow: int = opt(26, "MACD slow EMA period", min=3, max=500)
    macd_signal: int = opt(9, "MACD signal EMA period", min=1, max=500)
    adx_period: int = opt(14, "ADX period", min=2, max=500)
    adx_min: float = opt(20.0, "ADX below this earns no trend-strength points", min=0, max=100)
    adx_full: float = opt(40.0, "ADX from this on earns all trend-strength points", min=0, max=100)
    rsi_period: int = opt(14, "RSI period", min=2, max=500)
    rsi_min: float = opt(50.0, "RSI confirmation band, lower end", min=0, max=100)
    rsi_max: float = opt(70.0, "RSI confirmation band, upper end (above: overbought)", min=0, max=100)
    regime_filter: bool = opt(True, "stand aside while the market is not risk-on (breadth below half or BTC "
                              "under its trend mean; see strategies.base.MarketState)")
    atr_period: int = opt(14, "ATR period for stop and target", min=1, max=500)
    stop_atr: float = opt(2.0, "stop this many ATRs below the close", gt=0, max=50)
    target_atr: float = opt(4.0, "target this many ATRs above the close", gt=0, max=100)


class TrendFollowing(Strategy):
    Params = TrendParams
    summary = "EMA cross with MACD, ADX and RSI confirmation"

    @classmethod
    def check_params(cls, p: TrendParams) -> Iterator[tuple[str, str]]:
        if p.ema_fast >= p.ema_slow:
            yield "ema_fast", f"expected less than ema_slow ({p.ema_slow}), got {p.ema_fast}"
        if p.macd_fast >= p.macd_slow:
            yield "macd_fast", f"expected less than macd_slow ({p.macd_slow}), got {p.macd_fast}"
        if p.adx_min >= p.adx_full:
            yield "adx_min", f"expected less than adx_full ({p.adx_full:g}), got {p.adx_min:g}"
        if p.rsi_min >= p.rsi_max:
            yield "rsi_min", f"expected less than rsi_max ({p.rsi_max:g}), got {p.rsi_min:g}"

    def min_candles(self) -> int:
        p = self.params
        return 2 * max(p.ema_slow, p.macd_slow + p.macd_signal, 2 * p.adx_period, p.rsi_period + 1, p.atr_period + 1)

    def evaluate(self, data: ScanInput) -> Signals:
        p, ind = self.params, data.signal
        close = last(ind.close)
        fast_m, slow_m = ind.ema(p.ema_fast), ind.ema(p.ema_slow)
        fast, slow = last(fast_m), last(slow_m)
        hist = ind.macd(p.macd_fast, p.macd_slow, p.macd_signal)[2]
        hist_now, hist_prev = last(hist), last(hist, 1)
        adx = last(ind.adx(p.adx_period))
        rsi = last(ind.rsi(p.rsi_period))
        atr = last(ind.atr(p.atr_period))

        window = min(p.cross_window, fast_m.shape[1])
        above_slow = fast_m[:, -window:] > slow_m[:, -window:]
        # candles since fast last was not above slow (window if above throughout)
        age = np.where(above_slow.all(axis=1), window, np.argmin(above_slow[:, ::-1], axis=1)).astype(np.float64)
        trend = fast > slow
        above = close > fast
        positive, rising = hist_now > 0, hist_now > hist_prev
        rsi_ok = (rsi >= p.rsi_min) & (rsi <= p.rsi_max)
        score = (20.0 * ramp(age, window, 1.0) + 15.0 * flag(above) + 10.0 * flag(positive)
                 + 10.0 * flag(rising) + 25.0 * ramp(adx, p.adx_min, p.adx_full) + 20.0 * flag(rsi_ok))
        allowed = trend & (atr > 0)
        if p.regime_filter:
            allowed &= data.regime().risk_on
        score = np.where(allowed, score, 0.0)

        def explain(i: int) -> str:
            cross = f" (crossed {age[i]:.0f} candles ago)" if age[i] < window else ""
            parts = [f"EMA{p.ema_fast}>EMA{p.ema_slow}{cross}"]
            if above[i]:
                parts.append(f"close>EMA{p.ema_fast}")
            parts.append(f"MACD hist{'>' if positive[i] else '<'}0 {'rising' if rising[i] else 'falling'}")
            parts.append(f"ADX {adx[i]:.0f}")
            parts.append(f"RSI {rsi[i]:.0f}" + ("" if rsi_ok[i] else " (outside band)"))
            return ", ".join(parts)

        return Signals(score, close - p.stop_atr * atr, close + p.target_atr * atr, explain)
