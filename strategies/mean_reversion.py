"""Mean reversion: buy a stretched dip (close at or below the lower Bollinger band, RSI
oversold, often on a volume spike) in one of the market's recent laggards, only while the
market as a whole is rising, and aim for the band's middle.

Why: over hours to days crypto pairs revert against the cross-section -- the pairs that fell
most relative to the rest over the last three days bounce the most (short-term reversal); a
per-pair bot cannot see that, the scanner can (``MarketState.strength``). Measured on the shared
1h data, dips in the weakest 15 % beat dips in any pair and random entries (research/README.md).
In a falling market a laggard's dip is a falling knife, hence the regime filter.

Score (0..100): Bollinger %b from 0.2 down to 0 (0..35); RSI from ``rsi_oversold + 10``
down to ``rsi_oversold`` (0..35); volume z-score from 0 to ``volume_z`` (0..20); the last
candle closed up, a first sign of a bounce (10). Required: at least one of the first two,
no strong downtrend (ADX >= ``adx_strong`` with the close under the trend EMA), the close
above its ``uptrend_period`` mean (a dip inside a longer uptrend; 0: off), relative strength at
most ``strength_max`` and, with ``regime_filter``, a risk-on market. The scanner's higher-timeframe confirmation
does not apply (``confirmed = False``): a dip is, by design, where the higher timeframe is weak.
Stop: ``stop_atr`` ATRs below the close; target: the Bollinger middle, at least
``min_target_atr`` ATRs above the close; out after 24 h, a trail 8 % under the high keeps part of a
spike that turns before the target (``max_hold_hours``, ``trailing_stop_pct``: walk-forward,
research/README.md 2c).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.fields import opt
from strategies.base import ScanInput, Signals, Strategy, flag, last, max_hold_opt, ramp, trailing_stop_opt


@dataclass(frozen=True)
class MeanReversionParams:
    bb_period: int = opt(20, "Bollinger band period", min=2, max=500)
    bb_std: float = opt(2.0, "Bollinger band width in standard deviations", gt=0, max=10)
    rsi_period: int = opt(14, "RSI period", min=2, max=500)
    rsi_oversold: float = opt(25.0, "RSI at or below this earns all oversold points", min=1, max=90)
    volume_period: int = opt(20, "candles the volume z-score compares against", min=2, max=500)
    volume_z: float = opt(2.0, "volume z-score that counts as a full spike", gt=0, max=20)
    trend_period: int = opt(50, "EMA period that defines the downtrend side", min=2, max=1000)
    adx_period: int = opt(14, "ADX period", min=2, max=500)
    adx_strong: float = opt(30.0, "ADX from which a downtrend is too strong to fade", min=0, max=100)
    uptrend_period: int = opt(0, "buy dips only while the close is above its mean over this many candles "
                                   "(0: off)", min=0, max=2000)
    strength_max: float = opt(0.15, "relative strength (percentile among the scanned pairs, 0..1) a pair may "
                              "have at most: dips of the last days' laggards revert the most (1: any pair)",
                              min=0, max=1)
    regime_filter: bool = opt(True, "stand aside while the market is not risk-on (breadth below half or BTC "
                              "under its trend mean; see strategies.base.MarketState)")
    atr_period: int = opt(14, "ATR period for stop and target", min=1, max=500)
    stop_atr: float = opt(3.0, "stop this many ATRs below the close", gt=0, max=50)
    min_target_atr: float = opt(1.0, "target at least this many ATRs above the close", gt=0, max=100)
    max_hold_hours: float | None = max_hold_opt(24.0)  # exits: walk-forward, research/README.md section 2c
    trailing_stop_pct: float | None = trailing_stop_opt(0.08)


class MeanReversion(Strategy):
    Params = MeanReversionParams
    summary = "Bollinger lower band, RSI oversold, volume spike, in a recent laggard, in a rising market"
    confirmed = False

    def min_candles(self) -> int:
        p = self.params
        # not uptrend_period: a younger pair has no long mean yet and simply gets no dip signal
        return 2 * max(p.bb_period, p.rsi_period + 1, p.volume_period + 1, p.trend_period, 2 * p.adx_period,
                       p.atr_period + 1)

    def evaluate(self, data: ScanInput) -> Signals:
        p, ind = self.params, data.signal
        close, open_ = last(ind.close), last(ind.open)
        upper, middle, lower = (last(b) for b in ind.bbands(p.bb_period, p.bb_std, p.bb_std))
        rsi = last(ind.rsi(p.rsi_period))
        vz = last(ind.volume_zscore(p.volume_period))
        trend = last(ind.ema(p.trend_period))
        adx = last(ind.adx(p.adx_period))
        atr = last(ind.atr(p.atr_period))

        with np.errstate(invalid="ignore", divide="ignore"):
            pctb = (close - lower) / (upper - lower)
        band_pts = 35.0 * ramp(pctb, 0.2, 0.0)
        rsi_pts = 35.0 * ramp(rsi, p.rsi_oversold + 10.0, p.rsi_oversold)
        volume_pts = 20.0 * ramp(vz, 0.0, p.volume_z)
        bounce = close > open_
        strong_down = (adx >= p.adx_strong) & (close < trend)
        score = band_pts + rsi_pts + volume_pts + 10.0 * flag(bounce)
        allowed = (band_pts + rsi_pts > 0) & ~strong_down & (atr > 0)
        if p.uptrend_period:
            allowed &= close > last(ind.sma(p.uptrend_period))
        market = data.regime()
        if p.strength_max < 1:
            allowed &= market.strength <= p.strength_max
        if p.regime_filter:
            allowed &= market.risk_on
        score = np.where(allowed, score, 0.0)
        target = np.fmax(middle, close + p.min_target_atr * atr)

        def explain(i: int) -> str:
            parts = [f"{'below' if close[i] <= lower[i] else 'near'} BB lower (%b {pctb[i]:.2f})", f"RSI {rsi[i]:.0f}"]
            if vz[i] > 0:
                parts.append(f"volume z {vz[i]:.1f}")
            if bounce[i]:
                parts.append("green candle")
            parts.append(f"ADX {adx[i]:.0f} {'above' if close[i] >= trend[i] else 'below'} EMA{p.trend_period}")
            return ", ".join(parts)

        return Signals(score, close - p.stop_atr * atr, target, explain)
