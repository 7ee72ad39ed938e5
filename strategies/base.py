"""Strategy plugin API.

A strategy is one module in ``strategies/`` defining one ``Strategy`` subclass; its name is
the module's name (``strategies/momentum.py`` -> ``"momentum"``), which is what
``strategies.enabled``, ``strategies.weights`` and ``strategies.params`` in config.json use.

A strategy sees every pair at once: ``evaluate`` gets a ``ScanInput`` whose ``signal`` (and
optionally ``higher``) timeframe give indicator matrices (pairs x time, newest candle in the
last column) computed once per scan and shared by all strategies. It returns one ``Signals``:
numpy arrays with a score 0..100 per pair (0 = no signal), a suggested stop and target, and
an ``explain(row)`` callback that the scanner calls only for pairs that made the cut, so the
per-pair string formatting stays off the hot path.

Spot only: we can buy an asset and later sell it, never sell what we do not hold, so every
signal is a long entry (side ``"buy"``) with its stop below and its target above the price.
Exits are the executor's job (stop, target, trailing, time).

Parameters: a frozen dataclass ``Params`` whose fields are declared with ``core.fields.opt``
(default, help, checks such as ``min``/``max``); ``strategies.params.<name>`` in config.json
is validated against it exactly like the rest of the config, and ``check_params`` adds the
relations between fields (e.g. fast EMA shorter than slow EMA).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

import core.indicators as ta
from core.fields import opt
from core.models import BUY


@dataclass(frozen=True)
class NoParams:
    """For a strategy without parameters."""


# The time and trailing exits of a strategy's positions belong to its tested defaults: a dip bought
# for a bounce wants a short life and at most a wide trail (a tight one is stopped by the bounce's own
# noise), a trend entry wants room to run.
# Each strategy's ``Params`` declares both with these helpers; null follows ``trading.*`` (``Config.exits``).

def max_hold_opt(default: float | None) -> Any:
    return opt(default, "exit this strategy's positions after this many hours (0: never; null: "
               "trading.max_hold_hours)", min=0, max=24 * 365)


def trailing_stop_opt(default: float | None) -> Any:
    return opt(default, "trailing stop of this strategy's positions, as a fraction below the high since entry "
               "(0: off; null: trading.trailing_stop_pct)", min=0, max=0.5)


class CandleMatrix(Protocol):
    """One timeframe's candles for all pairs (``core.scan.candles.CandleView`` is one)."""

    timeframe: str
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


class Indicators:
    """Indicator matrices of one timeframe for all pairs, computed on first use and cached.

    One object per timeframe and scan; strategies share it, so an EMA20 three strategies
    ask for is computed once. Arrays are pairs x time, newest candle in the last column.
    """

    def __init__(self, view: CandleMatrix) -> None:
        self.view = view
        self.timeframe = view.timeframe
        self.ts, self.open, self.high, self.low = view.ts, view.open, view.high, view.low
        self.close, self.volume = view.close, view.volume
        self._cache: dict[tuple, object] = {}

    def _get(self, key: tuple, compute: Callable[[], object]):
        try:
            return self._cache[key]
        except KeyError:
            value = self._cache[key] = compute()
            return value

    def sma(self, n: int) -> np.ndarray:
        return self._get(("sma", n), lambda: ta.sma(self.close, n))

    def ema(self, n: int) -> np.ndarray:
        return self._get(("ema", n), lambda: ta.ema(self.close, n))

    def rsi(self, n: int = 14) -> np.ndarray:
        return self._get(("rsi", n), lambda: ta.rsi(self.close, n))

    def macd(self, fast: int = 12, slow: int = 26, signal: int = 9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._get(("macd", fast, slow, signal), lambda: ta.macd(self.close, fast, slow, signal))

    def bbands(self, n: int = 20, up: float = 2.0, dn: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._get(("bbands", n, up, dn), lambda: ta.bbands(self.close, n, up, dn))

    def atr(self, n: int = 14) -> np.ndarray:
        return self._get(("atr", n), lambda: ta.atr(self.high, self.low, self.close, n))

    def adx(self, n: int = 14) -> np.ndarray:
        return self._get(("adx", n), lambda: ta.adx(self.high, self.low, self.close, n))

    def stoch(self, fastk: int = 5, slowk: int = 3, slowd: int = 3) -> tuple[np.ndarray, np.ndarray]:
        return self._get(("stoch", fastk, slowk, slowd),
                         lambda: ta.stoch(self.high, self.low, self.close, fastk, slowk, slowd))

    def roc(self, n: int = 10) -> np.ndarray:
        return self._get(("roc", n), lambda: ta.roc(self.close, n))

    def obv(self) -> np.ndarray:
        return self._get(("obv",), lambda: ta.obv(self.close, self.volume))

    def volume_zscore(self, n: int = 20) -> np.ndarray:
        return self._get(("volume_zscore", n), lambda: ta.volume_zscore(self.volume, n))

    def donchian(self, n: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """(upper, lower) of the previous n candles, current excluded: close > upper is a breakout."""
        return self._get(("donchian", n), lambda: ta.donchian(self.high, self.low, n))


# --- the market as a whole (computed once per scan, across every pair) ----------------------------
TREND_CANDLES = 200  # a pair is "up" while its close is above the mean of its last 200 closes (1h: ~8 days)
STRENGTH_CANDLES = 72  # relative strength looks back this many candles (1h: 3 days)
BREADTH_MIN = 0.5  # risk on: at least this share of the scanned pairs is up ...
BENCHMARK = "BTC/USDT"  # ... and so is this pair (when it is scanned)
MARKET_WINDOW = TREND_CANDLES + 1


def pair_features(close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(up, z) per row of a (rows, >= MARKET_WINDOW) close matrix whose last column is now:
    up = close above its TREND_CANDLES mean; z = the STRENGTH_CANDLES log return divided by
    the volatility expected over that span (volatility-adjusted, so a quiet coin's steady climb
    counts like a wild coin's jump). NaN history gives up False and z NaN."""
    w = close[:, -MARKET_WINDOW:]
    with np.errstate(invalid="ignore", divide="ignore"):
        up = w[:, -1] > w[:, 1:].mean(axis=1)
        logc = np.log(w[:, -STRENGTH_CANDLES - 1:])
        steps = np.diff(logc, axis=1)
        z = (logc[:, -1] - logc[:, 0]) / (steps.std(axis=1) * np.sqrt(STRENGTH_CANDLES))
    return up & np.isfinite(z), np.where(np.isfinite(z), z, np.nan)


def cross_section(up: np.ndarray, z: np.ndarray, ok: np.ndarray, benchmark: int | None
                  ) -> tuple[np.ndarray, float, bool]:
    """(strength per pair 0..1, breadth, risk_on) among the ``ok`` pairs at one moment.

    strength is the pair's percentile of z among them (0.5 where unknown); breadth the share of
    them that is up; risk on needs breadth >= BREADTH_MIN and the benchmark up (if it is ok)."""
    strength = np.full(len(z), 0.5)
    valid = ok & np.isfinite(z)
    n = int(valid.sum())
    if n > 1:
        zs = z[valid]
        order = zs.argsort(kind="stable")
        ranks = np.empty(n)
        ranks[order] = np.arange(n)
        strength[valid] = ranks / (n - 1)
    breadth = float(up[valid].mean()) if n else 0.0
    bench_up = True if benchmark is None or not ok[benchmark] else bool(up[benchmark])
    return strength, breadth, bool(breadth >= BREADTH_MIN and bench_up)


@dataclass(frozen=True, slots=True)
class MarketState:
    """The market-wide state of a scan, one value per row (a backtest serves rows of several
    moments in one call): computed once per scan from every scanned pair, read by strategies
    (stand aside when ``risk_on`` is False) and by the ranking (``strength``)."""

    strength: np.ndarray  # the pair's relative strength among all scanned pairs, 0 (weakest) .. 1
    breadth: np.ndarray  # share of the scanned pairs above their trend mean
    risk_on: np.ndarray  # bool: breadth >= BREADTH_MIN and the benchmark (BTC) up

    @classmethod
    def neutral(cls, n: int) -> "MarketState":
        return cls(np.full(n, 0.5), np.full(n, 1.0), np.ones(n, dtype=bool))


@dataclass(frozen=True, slots=True)
class ScanInput:
    """What a strategy sees: the same rows (pairs) in every timeframe, and the market's state."""

    symbols: tuple[str, ...]
    signal: Indicators  # the signal timeframe (scanner.timeframes[0])
    higher: Indicators | None  # the confirmation / next longer timeframe, if configured
    market: MarketState | None = None  # None: unknown (a strategy then treats the market as neutral)

    def regime(self) -> MarketState:
        return self.market if self.market is not None else MarketState.neutral(len(self.signal.close))


@dataclass(slots=True)
class Signals:
    """A strategy's verdict for every pair (arrays of length pairs)."""

    score: np.ndarray  # 0..100; 0 means no signal
    stop: np.ndarray  # suggested stop price (below the last close)
    target: np.ndarray  # suggested target price (above the last close)
    explain: Callable[[int], str]  # short human reason for one row, e.g. "EMA20>EMA50, ADX 31"
    side: str = BUY


class Strategy(ABC):
    """Base class of every strategy plugin (see the module docstring)."""

    name: ClassVar[str]
    Params: ClassVar[type] = NoParams
    summary: ClassVar[str] = ""
    # whether the scanner's higher-timeframe confirmation (scanner.confirm_timeframe) applies:
    # a dip buyer's dips are, by design, where the higher timeframe does not agree
    confirmed: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__module__.rpartition(".")[2]

    def __init__(self, params: Any = None) -> None:
        self.params = self.Params() if params is None else params

    @classmethod
    def check_params(cls, params: Any) -> Iterator[tuple[str, str]]:
        """Problems between fields, as (param name, what is expected); none by default."""
        return iter(())

    def min_candles(self) -> int:
        """Candles of the signal timeframe a pair needs before this strategy can judge it."""
        return 50

    def min_higher_candles(self) -> int:
        """Candles of the higher timeframe it needs (0: it does not use the higher timeframe)."""
        return 0

    @abstractmethod
    def evaluate(self, data: ScanInput) -> Signals:
        """Score every pair; vectorised over the rows, reasons only through ``explain``."""


# --- small vectorised helpers for scoring --------------------------------------------------------

def ramp(x: np.ndarray, zero_at: float, full_at: float) -> np.ndarray:
    """0 at ``zero_at``, 1 at ``full_at``, linear between, clipped; NaN gives 0.

    ``full_at`` may be below ``zero_at`` for "the lower, the better" (e.g. RSI oversold).
    """
    with np.errstate(invalid="ignore"):
        r = (x - zero_at) / (full_at - zero_at)
    return np.nan_to_num(np.clip(r, 0.0, 1.0), nan=0.0)


def flag(mask: np.ndarray) -> np.ndarray:
    """Boolean array as 0.0 / 1.0 (NaN comparisons are already False)."""
    return mask.astype(np.float64)


def last(x: np.ndarray, back: int = 0) -> np.ndarray:
    """Column ``-1 - back`` of a pairs x time matrix: each pair's newest (or older) value."""
    return x[:, -1 - back]
