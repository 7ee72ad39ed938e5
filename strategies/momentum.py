"""Momentum (cross-sectional): buy the strongest pairs of the universe after a pullback, only
while the market as a whole is rising.

Why: over days to weeks, crypto pairs that outran the rest on a volatility-adjusted basis tend to
keep outrunning it while the market is up (cross-sectional momentum); a per-pair bot cannot see
that, the scanner can (``MarketState.strength``, the pair's percentile among every scanned pair).
The entry waits for a pullback (RSI down to ``pullback_rsi``, then a green candle): at hourly
horizons short-term reversal is strong, and buying leaders on fresh highs lost to random entries
(research/README.md); ``entry = "breakout"`` keeps that variant for other timeframes. In a
falling market the strongest coin still falls, so the strategy stands aside.

Required: a risk-on market (with ``regime_filter``); relative strength at least ``strength_min``;
a positive ``roc_period`` rate of change (1h: one week); the close above its ``trend_period``
mean; the entry (``pullback``: RSI at most ``pullback_rsi`` and the last candle green;
``breakout``: the close above the previous ``breakout_period`` candles' high); RSI at most
``rsi_max`` (a vertical move is left alone). With a higher timeframe, its close above
its ``higher_ema`` EMA as well.
Score (0..100): 60, plus relative strength from ``strength_min`` to 1 (0..25), plus volume
z-score from 0 to ``volume_z`` (0..15). Stop ``stop_atr`` ATRs below the close, target
``target_atr`` ATRs above it (the risk gate keeps that reward:risk when it clamps the stop); a
trail 6 % under the high, out after 96 h (``trailing_stop_pct``, ``max_hold_hours``: walk-forward).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.fields import opt
from strategies.base import ScanInput, Signals, Strategy, last, max_hold_opt, ramp, trailing_stop_opt


@dataclass(frozen=True)
class MomentumParams:
    roc_period: int = opt(168, "the trend's horizon, candles (1h: one week)", min=1, max=1000)
    trend_z: float = opt(0.0, "the roc_period log return divided by the volatility expected over it (a "
                         "volatility-adjusted trend) must exceed this", min=-10, max=10)
    strength_min: float = opt(0.7, "relative strength (percentile among the scanned pairs, 0..1) a pair needs",
                              min=0, max=1)
    trend_period: int = opt(200, "the close must be above its mean over this many candles", min=2, max=2000)
    entry: str = opt("pullback", "when to enter a strong pair: on a pullback (RSI at most pullback_rsi, the last "
                     "candle green) or on a breakout above the previous breakout_period candles' high",
                     choices=("pullback", "breakout"))
    pullback_rsi: float = opt(35.0, "pullback entry: RSI at or below this", min=1, max=100)
    breakout_period: int = opt(24, "breakout entry: above the high of this many previous candles", min=2, max=500)
    volume_period: int = opt(20, "candles the volume z-score compares against", min=2, max=500)
    volume_z: float = opt(2.0, "volume z-score that earns all volume points", gt=0, max=20)
    rsi_period: int = opt(14, "RSI period", min=2, max=500)
    rsi_max: float = opt(80.0, "RSI above this: no signal (exhausted move)", min=1, max=100)
    higher_ema: int = opt(50, "EMA period on the higher timeframe the close must be above", min=2, max=500)
    regime_filter: bool = opt(True, "stand aside while the market is not risk-on (breadth below half or BTC "
                              "under its trend mean; see strategies.base.MarketState)")
    atr_period: int = opt(14, "ATR period for stop and target", min=1, max=500)
    stop_atr: float = opt(2.0, "stop this many ATRs below the close", gt=0, max=50)
    target_atr: float = opt(6.0, "target this many ATRs above the close", gt=0, max=100)
    max_hold_hours: float | None = max_hold_opt(96.0)  # exits: walk-forward, research/README.md section 2c
    trailing_stop_pct: float | None = trailing_stop_opt(0.06)


class Momentum(Strategy):
    Params = MomentumParams
    summary = "strongest pairs (relative strength) after a pullback, in a rising market"
    confirmed = False  # its own higher-timeframe check (close above the EMA) replaces the scanner's

    def min_candles(self) -> int:
        p = self.params
        return max(p.roc_period + 1, p.trend_period, 2 * (p.breakout_period + 1), 2 * (p.volume_period + 1),
                   2 * (p.rsi_period + 1), 2 * (p.atr_period + 1))

    def min_higher_candles(self) -> int:
        return self.params.higher_ema + 10  # the EMA is seeded by the mean of its first candles, then a margin

    def evaluate(self, data: ScanInput) -> Signals:
        p, ind = self.params, data.signal
        market = data.regime()
        close = last(ind.close)
        roc = last(ind.roc(p.roc_period))
        w = min(p.roc_period, ind.close.shape[1] - 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            logc = np.log(ind.close[:, -w - 1:])
            z = (logc[:, -1] - logc[:, 0]) / (np.diff(logc, axis=1).std(axis=1) * np.sqrt(w))
        mean = last(ind.sma(p.trend_period))
        prior_high = last(ind.donchian(p.breakout_period)[0])
        vz = last(ind.volume_zscore(p.volume_period))
        rsi = last(ind.rsi(p.rsi_period))
        atr = last(ind.atr(p.atr_period))
        strength = market.strength
        if p.entry == "breakout":
            timing = close > prior_high
        else:
            timing = (rsi <= p.pullback_rsi) & (close > last(ind.open))
        if data.higher is not None:
            h_above = last(data.higher.close) > last(data.higher.ema(p.higher_ema))
        else:
            h_above = np.ones(close.shape, dtype=bool)
        allowed = ((strength >= p.strength_min) & (z > p.trend_z) & (close > mean) & timing & (rsi <= p.rsi_max)
                   & h_above & (atr > 0))
        if p.regime_filter:
            allowed &= market.risk_on
        score = 60.0 + 25.0 * ramp(strength, p.strength_min, 1.0) + 15.0 * ramp(vz, 0.0, p.volume_z)
        score = np.where(allowed, score, 0.0)

        def explain(i: int) -> str:
            parts = [f"ROC{p.roc_period} {roc[i]:+.1f}% (z {z[i]:.1f})",
                     (f"broke {p.breakout_period}-candle high" if p.entry == "breakout" else "green candle after a pullback"),
                     f"above SMA{p.trend_period}"]
            if vz[i] > 0:
                parts.append(f"volume z {vz[i]:.1f}")
            if data.higher is not None:
                parts.append(f"{data.higher.timeframe} close>EMA{p.higher_ema}")
            parts.append(f"RSI {rsi[i]:.0f}")
            return ", ".join(parts)

        return Signals(score, close - p.stop_atr * atr, close + p.target_atr * atr, explain)
