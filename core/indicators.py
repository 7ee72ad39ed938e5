"""TA-Lib-exact technical indicators as numba kernels, for one pair or all pairs at once.

Every public function takes float64 arrays that are either 1-D (one pair over time) or
2-D C-contiguous (pairs x time) and returns arrays of the same shape (a tuple for
multi-output indicators). The 2-D path is one compiled call that loops over the rows
inside numba; that, not the arithmetic, is what makes a scan of 150 pairs faster than
calling TA-Lib pair by pair.

NaN conventions
  * Leading NaNs mean "no history yet". A row starts at the first index where every
    input is non-NaN; the result is TA-Lib applied to that suffix, and everything before
    it (plus the indicator's lookback) is NaN. The candle store left-pads pairs with a
    shorter history with NaN, so ragged pairs fit one matrix. Gaps in the market data
    are missing rows, i.e. just a shorter series.
  * A NaN after the start is not skipped: the kernels repeat TA-Lib's arithmetic step by
    step, so it propagates exactly as TA-Lib propagates it (usually NaN from there on for
    the recursive indicators). The extras below (volume_zscore, donchian, highest,
    lowest) give NaN wherever their window holds a NaN.

The values are TA-Lib's (default compatibility, no unstable period), checked against the
`talib` package (0.8.x) on the real 1h data: same seeding, same lookback, and the same
operation order as its C code, including its fused multiply-adds (EMA, MACD, ATR,
BBANDS) and its zero tests, so results agree to the last bit or very close to it.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

__all__ = [
    "sma", "ema", "rsi", "macd", "bbands", "atr", "adx", "stoch", "roc", "obv",
    "volume_zscore", "donchian", "highest", "lowest", "warmup", "INDICATORS",
]

_NAN = np.nan
_EPS = 1e-14  # TA-Lib's TA_EPSILON: its "is zero" band for DI sums and stoch ranges


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c rounded once (llvm.fma), as TA-Lib's fused kernels compute it."""
    if not all(isinstance(t, types.Float) for t in (a, b, c)):
        return None
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return sig, codegen


# --------------------------------------------------------------------------- helpers

@njit(cache=True)
def _start1(a):
    for i in range(a.shape[0]):
        if a[i] == a[i]:
            return i
    return a.shape[0]


@njit(cache=True)
def _start2(a, b):
    for i in range(a.shape[0]):
        if a[i] == a[i] and b[i] == b[i]:
            return i
    return a.shape[0]


@njit(cache=True)
def _start3(a, b, c):
    for i in range(a.shape[0]):
        if a[i] == a[i] and b[i] == b[i] and c[i] == c[i]:
            return i
    return a.shape[0]


@njit(cache=True)
def _true_range(high, low, prev_close):
    tr = high - low
    a = abs(high - prev_close)
    if a > tr:
        tr = a
    b = abs(low - prev_close)
    if b > tr:
        tr = b
    return tr


@njit(cache=True)
def _sma_from(x, first, n, out):
    """Running-sum SMA of x[first:] written from first + n - 1 on (TA-Lib's INT_SMA)."""
    total = 0.0
    for i in range(first, first + n - 1):
        total += x[i]
    for i in range(first + n - 1, x.shape[0]):
        total += x[i]
        out[i] = total / n
        total -= x[i - n + 1]


# --------------------------------------------------------------------------- row kernels

@njit(cache=True)
def _sma_row(x, n, out):
    s = _start1(x)
    if x.shape[0] - s < n:
        return
    _sma_from(x, s, n, out)


@njit(cache=True)
def _ema_row(x, n, out):
    s = _start1(x)
    t = x.shape[0]
    if t - s < n:
        return
    k = 2.0 / (n + 1)
    total = 0.0
    for i in range(s, s + n):
        total += x[i]
    prev = total / n
    out[s + n - 1] = prev
    for i in range(s + n, t):
        prev = _fma(x[i] - prev, k, prev)
        out[i] = prev


@njit(cache=True)
def _rsi_row(x, n, out):
    s = _start1(x)
    t = x.shape[0]
    if t - s <= n:
        return
    inv = 1.0 / n
    w = float(n - 1)
    gain = 0.0
    loss = 0.0
    for i in range(s + 1, s + n + 1):
        d = x[i] - x[i - 1]
        g = d if d > 0.0 else 0.0
        gain += g
        loss += g - d
    gain *= inv
    loss *= inv
    total = gain + loss
    out[s + n] = gain / total * 100.0 if total > 0.0 else 0.0
    for i in range(s + n + 1, t):
        d = x[i] - x[i - 1]
        g = d if d > 0.0 else 0.0
        gain = (gain * w + g) * inv
        loss = (loss * w + (g - d)) * inv
        total = gain + loss
        out[i] = gain / total * 100.0 if total > 0.0 else 0.0


@njit(cache=True)
def _macd_row(x, fast, slow, signal, out_macd, out_signal, out_hist):
    s = _start1(x)
    t = x.shape[0]
    if t - s < slow + signal - 1:
        return
    k_slow = 2.0 / (slow + 1)
    k_fast = 2.0 / (fast + 1)
    k_sig = 2.0 / (signal + 1)
    # TA-Lib seeds the fast EMA on the slow one's last `fast` values, so both start together.
    sum_slow = 0.0
    for i in range(s, s + slow):
        sum_slow += x[i]
    sum_fast = 0.0
    for i in range(s + slow - fast, s + slow):
        sum_fast += x[i]
    ema_slow = sum_slow / slow
    ema_fast = sum_fast / fast
    i = s + slow - 1
    m = ema_fast - ema_slow
    sum_m = m + 0.0
    for _ in range(signal - 1):
        i += 1
        ema_slow = _fma(x[i] - ema_slow, k_slow, ema_slow)
        ema_fast = _fma(x[i] - ema_fast, k_fast, ema_fast)
        m = ema_fast - ema_slow
        sum_m += m
    sig = sum_m / signal
    out_macd[i] = m
    out_signal[i] = sig
    out_hist[i] = m - sig
    for j in range(i + 1, t):
        ema_slow = _fma(x[j] - ema_slow, k_slow, ema_slow)
        ema_fast = _fma(x[j] - ema_fast, k_fast, ema_fast)
        m = ema_fast - ema_slow
        sig = _fma(m - sig, k_sig, sig)
        out_macd[j] = m
        out_signal[j] = sig
        out_hist[j] = m - sig


@njit(cache=True)
def _stddev_window(x, lo, hi, inv):
    """Re-centre on the window mean: shift, sum of shifted values and of their squares."""
    total = 0.0
    for j in range(lo, hi + 1):
        total += x[j]
    shift = total * inv
    s1 = 0.0
    s2 = 0.0
    for j in range(lo, hi + 1):
        d = x[j] - shift
        s1 += d
        s2 += d * d
    return shift, s1, s2


@njit(cache=True)
def _bbands_row(x, n, up, dn, out_upper, out_middle, out_lower):
    s = _start1(x)
    t = x.shape[0]
    if t - s < n:
        return
    # Variance from sums of values shifted by a reference close to the mean (so no
    # catastrophic cancellation at BTC prices); the reference is re-centred when the
    # sums lose precision or every 32 windows, exactly when TA-Lib does it.
    inv = 1.0 / n
    shift = x[s]
    total = 0.0
    s1 = 0.0
    s2 = 0.0
    for i in range(s, s + n - 1):
        total += x[i]
        d = x[i] - shift
        s1 += d
        s2 += d * d
    budget_full = 32 * n
    budget = budget_full
    same = up == dn
    for i in range(s + n - 1, t):
        xi = x[i]
        total = xi + total
        d = xi - shift
        s1 = d + s1
        s2 = d * d + s2
        m1 = s1 * inv
        var = s2 * inv - m1 * m1
        mid = total / n
        xt = x[i - n + 1]
        total -= xt
        dt = xt - shift
        dt2 = dt * dt
        s2 -= dt2
        recentre = False
        if s2 * inv * 1e-6 <= var or not (var == var and s2 == s2):
            if dt2 > s2 * 1e6:
                recentre = True
            else:
                budget -= 1
                if budget == 0:
                    recentre = True
        else:
            recentre = True
        if recentre:
            shift, s1, s2 = _stddev_window(x, i - n + 1, i, inv)
            m1 = s1 * inv
            mean2 = s2 * inv
            var = mean2 - m1 * m1
            if mean2 * 1e-12 > var:
                var = 0.0
            dt = xt - shift
            s1 -= dt
            s2 -= dt * dt
            budget = budget_full
        else:
            s1 -= dt
        sd = 0.0 if var == 0.0 else np.sqrt(var)
        out_middle[i] = mid
        if same:
            w = sd * up
            out_upper[i] = mid + w
            out_lower[i] = mid - w
        else:
            out_upper[i] = _fma(up, sd, mid)
            out_lower[i] = mid - dn * sd


@njit(cache=True)
def _atr_row(high, low, close, n, out):
    s = _start3(high, low, close)
    t = high.shape[0]
    if t - s <= n:
        return
    if n == 1:  # TA-Lib returns the plain true range
        for i in range(s + 1, t):
            out[i] = _true_range(high[i], low[i], close[i - 1])
        return
    total = 0.0
    for i in range(s + 1, s + n + 1):
        total += _true_range(high[i], low[i], close[i - 1])
    prev = total / n
    out[s + n] = prev
    w = (n - 1) / n
    u = 1.0 - w
    for i in range(s + n + 1, t):
        prev = _fma(prev, w, _true_range(high[i], low[i], close[i - 1]) * u)
        out[i] = prev


@njit(cache=True)
def _adx_row(high, low, close, n, out):
    s = _start3(high, low, close)
    t = high.shape[0]
    if t - s < 2 * n:
        return
    w = float(n - 1)
    minus_dm = 0.0
    plus_dm = 0.0
    tr = 0.0
    ph = high[s]
    pl = low[s]
    pc = close[s]
    today = s
    for _ in range(n - 1):
        today += 1
        hi = high[today]
        lo = low[today]
        up = hi - ph
        down = pl - lo
        ph = hi
        pl = lo
        if down > 0.0 and up < down:
            minus_dm += down
        elif up > 0.0 and up > down:
            plus_dm += up
        tr += _true_range(hi, lo, pc)
        pc = close[today]
    sum_dx = 0.0
    for _ in range(n):
        today += 1
        hi = high[today]
        lo = low[today]
        up = hi - ph
        down = pl - lo
        ph = hi
        pl = lo
        minus_dm -= minus_dm / n
        plus_dm -= plus_dm / n
        if down > 0.0 and up < down:
            minus_dm += down
        elif up > 0.0 and up > down:
            plus_dm += up
        tr = tr - tr / n + _true_range(hi, lo, pc)
        pc = close[today]
        if tr > 0.0:
            mdi = minus_dm / tr * 100.0
            pdi = plus_dm / tr * 100.0
            di_sum = mdi + pdi
            if not (-_EPS < di_sum and di_sum < _EPS):
                sum_dx += abs(mdi - pdi) / di_sum * 100.0
    adx_v = sum_dx / n
    out[today] = adx_v
    while today < t - 1:
        today += 1
        hi = high[today]
        lo = low[today]
        up = hi - ph
        down = pl - lo
        ph = hi
        pl = lo
        minus_dm -= minus_dm / n
        plus_dm -= plus_dm / n
        if down > 0.0 and up < down:
            minus_dm += down
        elif up > 0.0 and up > down:
            plus_dm += up
        tr = tr - tr / n + _true_range(hi, lo, pc)
        pc = close[today]
        if tr > 0.0:
            mdi = minus_dm / tr * 100.0
            pdi = plus_dm / tr * 100.0
            di_sum = mdi + pdi
            if not (-_EPS < di_sum and di_sum < _EPS):
                adx_v = (adx_v * w + abs(mdi - pdi) / di_sum * 100.0) / n
        out[today] = adx_v


@njit(cache=True)
def _stoch_row(high, low, close, fastk, slowk, slowd, out_k, out_d, raw):
    s = _start3(high, low, close)
    t = high.shape[0]
    if t - s < fastk + slowk + slowd - 2:
        return
    lowest = 0.0
    highest = 0.0
    low_at = s - 1
    high_at = s - 1
    first_k = s + fastk - 1
    for today in range(first_k, t):
        trail = today - fastk + 1
        v = low[today]
        if low_at < trail:
            low_at = trail
            lowest = low[trail]
            for i in range(trail + 1, today + 1):
                if low[i] < lowest:
                    low_at = i
                    lowest = low[i]
        elif v <= lowest:
            low_at = today
            lowest = v
        v = high[today]
        if high_at < trail:
            high_at = trail
            highest = high[trail]
            for i in range(trail + 1, today + 1):
                if high[i] > highest:
                    high_at = i
                    highest = high[i]
        elif v >= highest:
            high_at = today
            highest = v
        diff = highest - lowest
        scale = (abs(highest) + abs(lowest)) * _EPS
        if scale >= abs(diff):
            raw[today] = 0.0
        else:
            raw[today] = (close[today] - lowest) / diff * 100.0
    # slow %K = SMA(raw %K), slow %D = SMA(slow %K); TA-Lib copies instead of averaging one value
    if slowk == 1:
        for i in range(first_k, t):
            out_k[i] = raw[i]
    else:
        _sma_from(raw, first_k, slowk, out_k)
    first_sk = first_k + slowk - 1
    if slowd == 1:
        for i in range(first_sk, t):
            out_d[i] = out_k[i]
    else:
        _sma_from(out_k, first_sk, slowd, out_d)
    for i in range(first_sk, first_sk + slowd - 1):
        out_k[i] = _NAN


@njit(cache=True)
def _roc_row(x, n, out):
    s = _start1(x)
    t = x.shape[0]
    for i in range(s + n, t):
        prev = x[i - n]
        out[i] = (x[i] / prev - 1.0) * 100.0 if prev != 0.0 else 0.0


@njit(cache=True)
def _obv_row(close, volume, out):
    s = _start2(close, volume)
    t = close.shape[0]
    if s >= t:
        return
    acc = volume[s]
    prev = close[s]
    out[s] = acc
    for i in range(s + 1, t):
        c = close[i]
        if c > prev:
            acc += volume[i]
        elif c < prev:
            acc -= volume[i]
        out[i] = acc
        prev = c


@njit(cache=True)
def _volume_zscore_row(v, n, out):
    s = _start1(v)
    t = v.shape[0]
    for i in range(s + n, t):
        total = 0.0
        for j in range(i - n, i):
            total += v[j]
        mean = total / n
        acc = 0.0
        for j in range(i - n, i):
            d = v[j] - mean
            acc += d * d
        sd = np.sqrt(acc / n)
        # A flat window (sd == 0) has no scale: NaN, so "z > 3" stays False.
        out[i] = (v[i] - mean) / sd if sd > 0.0 else _NAN


@njit(cache=True)
def _rolling_extreme_row(x, n, lag, want_max, out):
    """Max/min of x[i-n+1-lag .. i-lag]: lag=0 includes the current value, lag=1 excludes it."""
    s = _start1(x)
    t = x.shape[0]
    best = 0.0
    best_at = -1
    nans = 0  # NaNs inside the current window
    for i in range(s, t):
        hi = i - lag
        lo = hi - n + 1
        if hi >= s and x[hi] != x[hi]:
            nans += 1
        if lo - 1 >= s and x[lo - 1] != x[lo - 1]:
            nans -= 1
        if lo < s:
            continue
        if best_at < lo:
            best_at = -1
            for j in range(lo, hi + 1):
                v = x[j]
                if v == v and (best_at < 0 or (v >= best if want_max else v <= best)):
                    best = v
                    best_at = j
        else:
            v = x[hi]
            if v == v and (v >= best if want_max else v <= best):
                best = v
                best_at = hi
        out[i] = best if nans == 0 else _NAN


# --------------------------------------------------------------------------- 2-D drivers
# One compiled call per indicator for all pairs; 1-D input is passed as a 1 x T view.

@njit(cache=True)
def _sma_2d(x, n):
    out = np.full(x.shape, _NAN)
    for r in range(x.shape[0]):
        _sma_row(x[r], n, out[r])
    return out


@njit(cache=True)
def _ema_2d(x, n):
    out = np.full(x.shape, _NAN)
    for r in range(x.shape[0]):
        _ema_row(x[r], n, out[r])
    return out


@njit(cache=True)
def _rsi_2d(x, n):
    out = np.full(x.shape, _NAN)
    for r in range(x.shape[0]):
        _rsi_row(x[r], n, out[r])
    return out


@njit(cache=True)
def _macd_2d(x, fast, slow, signal):
    m = np.full(x.shape, _NAN)
    sig = np.full(x.shape, _NAN)
    hist = np.full(x.shape, _NAN)
    for r in range(x.shape[0]):
        _macd_row(x[r], fast, slow, signal, m[r], sig[r], hist[r])
    return m, sig, hist


@njit(cache=True)
def _bbands_2d(x, n, up, dn):
    upper = np.full(x.shape, _NAN)
    middle = np.full(x.shape, _NAN)
    lower = np.full(x.shape, _NAN)
    for r in range(x.shape[0]):
        _bbands_row(x[r], n, up, dn, upper[r], middle[r], lower[r])
    return upper, middle, lower


@njit(cache=True)
def _atr_2d(high, low, close, n):
    out = np.full(high.shape, _NAN)
    for r in range(high.shape[0]):
        _atr_row(high[r], low[r], close[r], n, out[r])
    return out


@njit(cache=True)
def _adx_2d(high, low, close, n):
    out = np.full(high.shape, _NAN)
    for r in range(high.shape[0]):
        _adx_row(high[r], low[r], close[r], n, out[r])
    return out


@njit(cache=True)
def _stoch_2d(high, low, close, fastk, slowk, slowd):
    k = np.full(high.shape, _NAN)
    d = np.full(high.shape, _NAN)
    raw = np.empty(high.shape[1])
    for r in range(high.shape[0]):
        _stoch_row(high[r], low[r], close[r], fastk, slowk, slowd, k[r], d[r], raw)
    return k, d


@njit(cache=True)
def _roc_2d(x, n):
    out = np.full(x.shape, _NAN)
    for r in range(x.shape[0]):
        _roc_row(x[r], n, out[r])
    return out


@njit(cache=True)
def _obv_2d(close, volume):
    out = np.full(close.shape, _NAN)
    for r in range(close.shape[0]):
        _obv_row(close[r], volume[r], out[r])
    return out


@njit(cache=True)
def _volume_zscore_2d(v, n):
    out = np.full(v.shape, _NAN)
    for r in range(v.shape[0]):
        _volume_zscore_row(v[r], n, out[r])
    return out


@njit(cache=True)
def _rolling_extreme_2d(x, n, lag, want_max):
    out = np.full(x.shape, _NAN)
    for r in range(x.shape[0]):
        _rolling_extreme_row(x[r], n, lag, want_max, out[r])
    return out


@njit(cache=True)
def _donchian_2d(high, low, n):
    upper = np.full(high.shape, _NAN)
    lower = np.full(high.shape, _NAN)
    for r in range(high.shape[0]):
        _rolling_extreme_row(high[r], n, 1, True, upper[r])
        _rolling_extreme_row(low[r], n, 1, False, lower[r])
    return upper, lower


# --------------------------------------------------------------------------- public API

def _rows(*arrays: np.ndarray) -> tuple[list[np.ndarray], bool]:
    """Inputs as writable C-contiguous float64 2-D arrays (one compiled signature each)."""
    out = []
    shape = None
    for a in arrays:
        a = np.require(a, dtype=np.float64, requirements=("C", "A", "W"))
        if a.ndim not in (1, 2):
            raise ValueError(f"indicator input must be 1-D or 2-D (pairs x time), got {a.ndim}-D")
        if shape is not None and a.shape != shape:
            raise ValueError(f"indicator inputs differ in shape: {shape} vs {a.shape}")
        shape = a.shape
        out.append(a.reshape(1, -1) if a.ndim == 1 else a)
    return out, len(shape) == 1


def _shaped(result, one_d: bool):
    if isinstance(result, tuple):
        return tuple(r[0] for r in result) if one_d else result
    return result[0] if one_d else result


def _period(value: int, name: str, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value or not minimum <= int(value) <= 100_000:
        raise ValueError(f"{name} must be an integer in {minimum}..100000, got {value!r}")
    return int(value)


def sma(x, n=30):
    """Simple moving average (TA-Lib SMA)."""
    (a,), one_d = _rows(x)
    return _shaped(_sma_2d(a, _period(n, "n", 1)), one_d)


def ema(x, n=30):
    """Exponential moving average seeded with the SMA of the first n values (TA-Lib EMA)."""
    (a,), one_d = _rows(x)
    return _shaped(_ema_2d(a, _period(n, "n", 1)), one_d)


def rsi(x, n=14):
    """Wilder's relative strength index, 0..100 (TA-Lib RSI); a flat window gives 0."""
    (a,), one_d = _rows(x)
    return _shaped(_rsi_2d(a, _period(n, "n", 1)), one_d)


def macd(x, fast=12, slow=26, signal=9):
    """(macd, signal, hist) as TA-Lib MACD: fast EMA aligned to the slow one's start."""
    (a,), one_d = _rows(x)
    fast = _period(fast, "fast", 1)
    slow = _period(slow, "slow", 1)
    if slow < fast:
        fast, slow = slow, fast
    return _shaped(_macd_2d(a, fast, slow, _period(signal, "signal", 1)), one_d)


def bbands(x, n=20, nbdev_up=2.0, nbdev_dn=2.0):
    """(upper, middle, lower) Bollinger bands on the SMA and population stddev (TA-Lib)."""
    (a,), one_d = _rows(x)
    up, dn = float(nbdev_up), float(nbdev_dn)
    if not (np.isfinite(up) and np.isfinite(dn)):
        raise ValueError(f"nbdev_up/nbdev_dn must be finite, got {nbdev_up!r}, {nbdev_dn!r}")
    return _shaped(_bbands_2d(a, _period(n, "n", 2), up, dn), one_d)


def atr(high, low, close, n=14):
    """Wilder's average true range (TA-Lib ATR; n=1 is the plain true range)."""
    (h, lo, c), one_d = _rows(high, low, close)
    return _shaped(_atr_2d(h, lo, c, _period(n, "n", 1)), one_d)


def adx(high, low, close, n=14):
    """Wilder's average directional index (TA-Lib ADX), lookback 2n - 1."""
    (h, lo, c), one_d = _rows(high, low, close)
    return _shaped(_adx_2d(h, lo, c, _period(n, "n", 2)), one_d)


def stoch(high, low, close, fastk=5, slowk=3, slowd=3):
    """(slowk, slowd) slow stochastic with SMA smoothing (TA-Lib STOCH, MA type SMA)."""
    (h, lo, c), one_d = _rows(high, low, close)
    return _shaped(
        _stoch_2d(h, lo, c, _period(fastk, "fastk", 1), _period(slowk, "slowk", 1),
                  _period(slowd, "slowd", 1)),
        one_d,
    )


def roc(x, n=10):
    """Rate of change in percent, ((x / x[-n]) - 1) * 100; 0 where x[-n] is 0 (TA-Lib ROC)."""
    (a,), one_d = _rows(x)
    return _shaped(_roc_2d(a, _period(n, "n", 1)), one_d)


def obv(close, volume):
    """On-balance volume starting at the first candle's volume (TA-Lib OBV)."""
    (c, v), one_d = _rows(close, volume)
    return _shaped(_obv_2d(c, v), one_d)


def volume_zscore(volume, n=20):
    """(v - mean) / std of the previous n candles, current candle excluded (population std).

    Excluding the current candle keeps a spike from diluting its own baseline. NaN for
    the first n candles and where the previous n volumes are all equal (std 0).
    """
    (v,), one_d = _rows(volume)
    return _shaped(_volume_zscore_2d(v, _period(n, "n", 2)), one_d)


def donchian(high, low, n=20):
    """(upper, lower): highest high / lowest low of the previous n candles, current excluded,
    so ``close > upper`` is a breakout."""
    (h, lo), one_d = _rows(high, low)
    return _shaped(_donchian_2d(h, lo, _period(n, "n", 1)), one_d)


def highest(x, n):
    """Highest value of the last n candles including the current one (TA-Lib MAX)."""
    (a,), one_d = _rows(x)
    return _shaped(_rolling_extreme_2d(a, _period(n, "n", 1), 0, True), one_d)


def lowest(x, n):
    """Lowest value of the last n candles including the current one (TA-Lib MIN)."""
    (a,), one_d = _rows(x)
    return _shaped(_rolling_extreme_2d(a, _period(n, "n", 1), 0, False), one_d)


def _calls() -> list[tuple[str, Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], object]]]:
    return [
        ("sma", lambda h, l, c, v: sma(c, 3)),
        ("ema", lambda h, l, c, v: ema(c, 3)),
        ("rsi", lambda h, l, c, v: rsi(c, 3)),
        ("macd", lambda h, l, c, v: macd(c, 2, 3, 2)),
        ("bbands", lambda h, l, c, v: (bbands(c, 3), bbands(c, 3, 2.0, 1.5))),
        ("atr", lambda h, l, c, v: atr(h, l, c, 3)),
        ("adx", lambda h, l, c, v: adx(h, l, c, 2)),
        ("stoch", lambda h, l, c, v: stoch(h, l, c, 2, 2, 2)),
        ("roc", lambda h, l, c, v: roc(c, 2)),
        ("obv", lambda h, l, c, v: obv(c, v)),
        ("volume_zscore", lambda h, l, c, v: volume_zscore(v, 2)),
        ("donchian", lambda h, l, c, v: donchian(h, l, 2)),
        ("highest", lambda h, l, c, v: (highest(h, 2), lowest(l, 2))),
    ]


INDICATORS: tuple[str, ...] = tuple(name for name, _ in _calls())


def warmup(progress: Callable[[str], None] | None = None) -> int:
    """Compile (or load from NUMBA_CACHE_DIR) every kernel by calling each indicator once
    on tiny 1-D and 2-D inputs; ``progress(name)`` is called after each. Returns the count."""
    rng = np.random.default_rng(0)
    close = 100.0 + rng.standard_normal((2, 12)).cumsum(axis=1)
    close[1, :3] = np.nan
    high = close + 0.5
    low = close - 0.5
    volume = rng.uniform(1.0, 10.0, (2, 12))
    calls = _calls()
    for name, call in calls:
        call(high, low, close, volume)
        call(high[0], low[0], close[0], volume[0])
        if progress is not None:
            progress(name)
    return len(calls)
