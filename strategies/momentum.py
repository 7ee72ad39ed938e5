"""Momentum: buy strength that is breaking out, on volume, with the higher timeframe
moving the same way; back off when RSI says the move is exhausted.

Score (0..100): rate of change from 0 to ``roc_full`` % (0..30), required to be positive;
close above the previous ``breakout_period`` candles' high (Donchian breakout, 25); volume
z-score from 0 to ``volume_z`` (0..20); higher timeframe ROC positive (12.5) and close above
its EMA (12.5) -- without a higher timeframe those 25 points cannot be earned. RSI above
``rsi_max`` halves the score. With ``regime_filter`` it stands aside unless the market is
risk-on. Stop and target are ATR multiples from the close.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.fields import opt
from strategies.base import ScanInput, Signals, Strategy, flag, last, ramp


@dataclass(frozen=True)
class MomentumParams:
    roc_period: int = opt(10, "rate-of-change period, candles", min=1, max=500)
    roc_full: float = opt(10.0, "ROC in percent that earns all ROC points", gt=0, max=1000)
    breakout_period: int = opt(20, "breakout above the high of this many previous candles", min=2, max=500)
    volume_period: int = opt(20, "candles the volume z-score compares against", min=2, max=500)
    volume_z: float = opt(2.0, "volume z-score that counts as a full volume breakout", gt=0, max=20)
    rsi_period: int = opt(14, "RSI period", min=2, max=500)
    rsi_max: float = opt(80.0, "RSI above this halves the score (exhausted move)", min=1, max=100)
    higher_roc_period: int = opt(10, "ROC period on the higher timeframe", min=1, max=500)
    higher_ema: int = opt(20, "EMA period on the higher timeframe", min=2, max=500)
    regime_filter: bool = opt(True, "stand aside while the market is not risk-on (breadth below half or BTC "
                              "under its trend mean; see strategies.base.MarketState)")
    atr_period: int = opt(14, "ATR period for stop and target", min=1, max=500)
    stop_atr: float = opt(2.0, "stop this many ATRs below the close", gt=0, max=50)
    target_atr: float = opt(3.0, "target this many ATRs above the close", gt=0, max=100)


class Momentum(Strategy):
    Params = MomentumParams
    summary = "ROC, Donchian/volume breakout, higher-timeframe agreement"

    def min_candles(self) -> int:
        p = self.params
        return 2 * max(p.roc_period + 1, p.breakout_period + 1, p.volume_period + 1, p.rsi_period + 1,
                       p.atr_period + 1)

    def min_higher_candles(self) -> int:
        p = self.params
        return 2 * max(p.higher_roc_period + 1, p.higher_ema)

    def evaluate(self, data: ScanInput) -> Signals:
        p, ind = self.params, data.signal
        close = last(ind.close)
        roc = last(ind.roc(p.roc_period))
        prior_high = last(ind.donchian(p.breakout_period)[0])
        vz = last(ind.volume_zscore(p.volume_period))
        rsi = last(ind.rsi(p.rsi_period))
        atr = last(ind.atr(p.atr_period))
        breakout = close > prior_high
        if data.higher is not None:
            hi = data.higher
            h_roc = last(hi.roc(p.higher_roc_period))
            h_above = last(hi.close) > last(hi.ema(p.higher_ema))
            h_up = h_roc > 0
        else:
            h_roc = np.full(close.shape, np.nan)
            h_up = h_above = np.zeros(close.shape, dtype=bool)
        exhausted = rsi > p.rsi_max
        score = (30.0 * ramp(roc, 0.0, p.roc_full) + 25.0 * flag(breakout) + 20.0 * ramp(vz, 0.0, p.volume_z)
                 + 12.5 * flag(h_up) + 12.5 * flag(h_above))
        score = np.where(exhausted, 0.5 * score, score)
        allowed = (roc > 0) & (atr > 0)
        if p.regime_filter:
            allowed &= data.regime().risk_on
        score = np.where(allowed, score, 0.0)

        def explain(i: int) -> str:
            parts = [f"ROC{p.roc_period} {roc[i]:+.1f}%"]
            if breakout[i]:
                parts.append(f"broke {p.breakout_period}-candle high")
            if vz[i] > 0:
                parts.append(f"volume z {vz[i]:.1f}")
            if data.higher is None:
                parts.append("no higher timeframe")
            else:
                tf = data.higher.timeframe
                parts.append(f"{tf} ROC {h_roc[i]:+.1f}%" + (f", {tf} close>EMA{p.higher_ema}" if h_above[i] else ""))
            parts.append(f"RSI {rsi[i]:.0f}" + (" exhausted (x0.5)" if exhausted[i] else ""))
            return ", ".join(parts)

        return Signals(score, close - p.stop_atr * atr, close + p.target_atr * atr, explain)
