"""Data quality: which pairs' candles must not be traded, and why. The one implementation the
live scan (``data_problems`` over the candle store's window) and the backtest (every cycle of a
whole history at once) both call.

The checks, per timeframe: no candles, too little history, non-finite or non-positive values,
stale data (the newest candle closed more than ``STALE_PERIODS`` periods before now), and
quarantine: a gap of more than ``gap_limit`` missing candles or a close-to-close move beyond
``jump_ratio`` (either direction) anywhere in the window. The jump ratio is meant for the
signal timeframe; on a longer one it is raised to the power sqrt(period ratio)
(``higher_jump_ratio``: 3 on 1h -> 9 on 4h), as genuine moves grow with the square root of time.

How. Every check is a property of one candle (its values), of the step into it (gap, jump) or
of the window's newest candle (history, staleness). ``CandleChecks`` marks the candles once and
keeps, per candle, the index of the newest marked candle at or before it; a window of candles
``first..last`` then holds a problem exactly when that index at ``last`` is >= ``first``. The
live scan asks at the end of each row of its (pairs x window) matrices, the backtest at the last
closed candle of every cycle with ``first = 0`` (its window is the whole history). The reasons
name the newest gap or jump in the window.
"""
from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from core.timeframes import HOUR_MS, TIMEFRAME_MS

STALE_PERIODS = 2
# problem flags, in the order the reasons are given
NO_CANDLES, SHORT, BAD, STALE, GAP, JUMP = 1, 2, 4, 8, 16, 32


def higher_jump_ratio(jump_ratio: float, signal_tf: str, higher_tf: str) -> float:
    """The signal timeframe's jump ratio scaled to a longer timeframe (log-returns grow with the
    square root of time: a genuine 4h candle moves about twice as far as a 1h one, so r -> r**2)."""
    scale = (TIMEFRAME_MS[higher_tf] / TIMEFRAME_MS[signal_tf]) ** 0.5
    return jump_ratio ** scale


def _when(ts_ms: float) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _duration(ms: float) -> str:
    hours = ms / HOUR_MS
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def _newest(mask: np.ndarray) -> np.ndarray:
    """Along the last axis: index of the newest True at or before each position (-1: none)."""
    # int32 where it fits, and no memory at all for the usual case of no problem anywhere (one
    # read-only -1 broadcast): this is 3 matrices per timeframe, kept for the backtest's skip reasons
    kind = np.int32 if mask.shape[-1] < 2**31 else np.int64
    if not mask.any():
        return np.broadcast_to(kind(-1), mask.shape)
    idx = np.where(mask, np.arange(mask.shape[-1], dtype=kind), kind(-1))
    return np.maximum.accumulate(idx, axis=-1)


class CandleChecks:
    """One timeframe's candles (last axis: candles, oldest first; NaN where a row has none yet),
    marked once; ``flags``/``reasons`` judge any window ending at any candle."""

    def __init__(self, timeframe: str, ts: np.ndarray, open: np.ndarray, high: np.ndarray, low: np.ndarray,
                 close: np.ndarray, volume: np.ndarray, gap_limit: int, jump_ratio: float) -> None:
        self.timeframe, self.tf_ms = timeframe, TIMEFRAME_MS[timeframe]
        self.ts, self.close = ts, close
        gap = np.zeros(ts.shape, dtype=bool)
        jump = np.zeros(ts.shape, dtype=bool)
        with np.errstate(invalid="ignore", divide="ignore"):
            bad = ~(volume >= 0)
            for x in (open, high, low, close):
                bad |= ~((x > 0) & (x < np.inf))
            gap[..., 1:] = np.diff(ts, axis=-1) > (gap_limit + 1) * self.tf_ms
            ratio = close[..., 1:] / close[..., :-1]
            jump[..., 1:] = (ratio > jump_ratio) | (ratio * jump_ratio < 1.0)
        self.bad, self.gap, self.jump = _newest(bad), _newest(gap), _newest(jump)
        self._texts: dict[tuple, tuple[str, ...]] = {}  # a quarantine's reason repeats every cycle

    def _at(self, a: np.ndarray, last: np.ndarray) -> np.ndarray:
        if a.shape[-1] == 0:  # no candles at all: every window is empty, the value is masked
            return np.zeros(a.shape[:-1] + last.shape[-1:], dtype=a.dtype)
        return np.take_along_axis(a, np.maximum(last, 0), axis=-1)

    def flags(self, last: np.ndarray, count: np.ndarray, need: int, now_ms) -> np.ndarray:
        """Problem flags of the windows of ``count`` candles ending at candle ``last``.

        ``last``/``count``: integer arrays shaped like the candles' leading axes plus one query
        axis (the live scan: (pairs, 1); the backtest, one pair's history: (cycles,)); ``now_ms``
        broadcasts against them."""
        first = last - count + 1
        has = count > 0
        f = np.where(~has, NO_CANDLES, 0)
        f |= np.where(has & (count < need), SHORT, 0)
        f |= np.where(has & (self._at(self.bad, last) >= first), BAD, 0)
        with np.errstate(invalid="ignore"):
            age = now_ms - (np.where(has, self._at(self.ts, last), np.nan) + self.tf_ms)
            f |= np.where(age > STALE_PERIODS * self.tf_ms, STALE, 0)
        f |= np.where(has & (self._at(self.gap, last) >= first), GAP, 0)
        f |= np.where(has & (self._at(self.jump, last) >= first), JUMP, 0)
        return f

    def reasons(self, row: tuple, last: int, count: int, flags: int, need: int, now_ms) -> list[str]:
        """The reasons behind ``flags`` for the window ending at candle ``last`` of row ``row``
        (an index tuple into the leading axes: ``(pair,)`` live, ``()`` for one pair's history)."""
        gap = int(self.gap[row][last]) if flags & GAP else -1
        jump = int(self.jump[row][last]) if flags & JUMP else -1
        key = (row, flags, need, count if flags & SHORT else 0, (last, now_ms) if flags & STALE else 0, gap, jump)
        text = self._texts.get(key)
        if text is None:
            text = self._texts[key] = tuple(self._reasons(row, last, count, flags, need, now_ms, gap, jump))
        return list(text)

    def _reasons(self, row: tuple, last: int, count: int, flags: int, need: int, now_ms, gap: int, jump: int):
        tf = self.timeframe
        ts, close = self.ts[row], self.close[row]
        out = []
        if flags & NO_CANDLES:
            out.append(f"no {tf} candles")
        if flags & SHORT:
            out.append(f"too little history: {count} {tf} candles, needs {need}")
        if flags & BAD:
            out.append(f"bad data: non-finite or non-positive values in the {tf} candles")
        if flags & STALE:
            out.append(f"stale: last {tf} candle closed {_duration(now_ms - (ts[last] + self.tf_ms))} ago")
        if flags & GAP:
            j = gap
            out.append(f"quarantined: {tf} data gap of {(ts[j] - ts[j - 1]) / self.tf_ms - 1:.0f} candles "
                       f"before {_when(ts[j])}")
        if flags & JUMP:
            j = jump
            with np.errstate(invalid="ignore", divide="ignore"):  # a bad close (0, NaN) on either side
                ratio = close[j] / close[j - 1]
            out.append(f"quarantined: {tf} close moved x{ratio:.4g} at {_when(ts[j])}")
        return out


def data_problems(view, need: int, now_ms: int, gap_limit: int, jump_ratio: float) -> dict[int, list[str]]:
    """Why rows of a candle store view must not be traded now: row -> reasons (rows without
    problems absent). The window is the whole stored row."""
    checks = CandleChecks(view.timeframe, view.ts, view.open, view.high, view.low, view.close, view.volume,
                          gap_limit, jump_ratio)
    counts = view.counts
    last = np.full((len(counts), 1), view.ts.shape[1] - 1)
    flags = checks.flags(last, counts[:, None], need, now_ms)[:, 0]
    return {int(i): checks.reasons((int(i),), int(last[i, 0]), counts[i], int(flags[i]), need, now_ms)
            for i in np.flatnonzero(flags)}
