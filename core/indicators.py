"""TA-Lib-exact technical indicators as numba kernels, for one pair or all pairs at once.

Every public function takes float64 arrays that are either 1-D (one pair over time) or
2-D (pairs x time) and returns arrays of the same shape (a tuple for multi-output
indicators). ``out=`` takes arrays to write into instead: a scanner that runs every few
seconds should reuse its buffers, because fresh multi-megabyte arrays cost page faults.

Why 2-D: one compiled call computes all pairs, and inside it rows run four at a time in
lockstep (sorted by where their history starts), so four independent recurrences (EMA,
Wilder smoothing, running sums) overlap in the CPU instead of each waiting for its own
previous step; work that is not part of a recurrence runs as separate vectorised passes.
A large call also spreads its rows over threads (below). The arithmetic of a row is
unchanged either way, so the values stay TA-Lib's (benchmarks/bench_indicators.py
measures the set against TA-Lib pair by pair, on all threads and on one).

Threads
  * A call with at least PARALLEL_MIN_CELLS cells (pairs x candles: a backtest's whole
    history) runs its _2d driver on the calling thread and on THREADS - 1 threads of a
    small pool at once. The drivers release the GIL (nogil) and take work units (a lane
    group of four rows, or one row) from a counter they share, incremented atomically,
    longest rows first. Each unit writes only its own output rows and each thread has its
    own scratch rows, so the result is the same bit for bit whichever thread computes a
    unit. A pool thread that starts late (a busy machine) just finds less work left: a
    call never takes much longer than on one thread. Smaller calls (the scanner's ~150 x
    500 every cycle) run on the calling thread alone, touching no other thread.
  * Plain Python threads, not numba's ``parallel=True``/``prange``: those need a
    threading layer (TBB, OpenMP or numba's workqueue), and each brings a hazard here:
    GNU OpenMP spins for milliseconds after every call (stalling a busy 2-core machine)
    and aborts a forked child that uses it, the workqueue keeps the calling thread idle
    and must not be entered from two threads at once, TBB is not a dependency; and
    parallel kernels take longer to compile, which a Pi pays in ``pitrader warmup``.
  * THREADS: NUMBA_NUM_THREADS if set, else the cores this process may run on; set
    ``core.indicators.THREADS = 1`` to make every call serial. The pool is made on first
    use, per process (a forked child makes its own), and its idle threads only wait.

Kernel names: ``_<indicator>_<part>``, one part per stage of a row's computation
  _seed    the recurrence's state at the row's first output, from its lookback window
           (TA-Lib's seeding; writes that first output where the indicator has one)
  _run     one row's recurrence from t_from to t_to, from a given state; returns the state
  _step    one step shared by _run and _lanes (BBANDS, OBV)
  _terms   a vectorised pass before a recurrence (its inputs, e.g. true ranges)
  _finish  a vectorised pass after it (e.g. RSI's ratio, the bands from the variance)
  _lanes   four rows in lockstep: each is seeded and _run up to the latest of their
           starts, then one loop advances all four (inlined into its caller)
  _single  _seed + _run (+ _finish) for one row: rows left over from the lane groups
  _unit    one work unit for a thread: a lane group or a leftover row, NaN head included
  _row     the same for indicators without lanes (ROC, the extras)
  _2d      the driver each public function calls (through _spread): where each row
           starts, the lane plan (_plan), then units until none is left (pairs x time)

NaN conventions
  * Leading NaNs mean "no history yet". A row starts at the first index where every
    input is non-NaN; the result is TA-Lib applied to that suffix and NaN before it (and
    over the indicator's lookback). The candle store left-pads pairs with a shorter
    history with NaN, so ragged pairs fit one matrix. Gaps in the market data are
    missing rows, i.e. simply a shorter series. A row without any such index is all NaN.
  * A NaN after the start is not skipped or repaired: the kernels repeat TA-Lib's
    arithmetic step by step, so the output is what TA-Lib gives for the same input -
    usually NaN from there on, for RSI a constant 0, for ADX a frozen value. The extras
    (volume_zscore, donchian, highest, lowest) give NaN wherever their window has a NaN.

Exactness: default compatibility, no unstable period, and the operation order of
TA-Lib's C code, including its fused multiply-adds (EMA, MACD, ATR, BBANDS), its
re-centred running variance (BBANDS) and its zero tests, so results equal the ``talib``
package (0.8.x) bit for bit on the real 1h data; the tests allow 1e-9.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "sma", "ema", "rsi", "macd", "bbands", "atr", "adx", "stoch", "roc", "obv",
    "volume_zscore", "donchian", "highest", "lowest", "warmup", "INDICATORS",
]

_NAN = np.nan
_EPS = 1e-14          # TA-Lib's TA_EPSILON: its "is zero" band (DI sums, stoch ranges)
_STOCH_SHIFT_MAX = 16  # %K windows up to this use shifted max/min passes (no NaN rows)
# Below this many cells (pairs x candles) a call runs on the calling thread alone: handing
# work to a pool thread costs 10-100 us, more than it saves on the scanner's ~150 x 500.
PARALLEL_MIN_CELLS = 250_000


def _cores() -> int:
    """NUMBA_NUM_THREADS if set, else the cores this process may run on."""
    if os.environ.get("NUMBA_NUM_THREADS", "").strip().isdigit():
        return max(int(os.environ["NUMBA_NUM_THREADS"]), 1)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# Threads a large call uses, the calling one included; 1 makes every call serial.
THREADS = _cores()


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c rounded once (llvm.fma), as TA-Lib's fused kernels compute it."""
    if not all(isinstance(t, types.Float) for t in (a, b, c)):
        return None
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return sig, codegen


# IEEE division (inf/NaN, no zero checks) as in TA-Lib's C; cached on disk (NUMBA_CACHE_DIR);
# nogil: the pool threads of a large call compute at the same time (see "Threads")
_kernel = njit(cache=True, error_model="numpy", nogil=True)
# the large four-row bodies and the work units: inlined in numba IR instead of also
# compiled on their own (each library that links a function optimises it again)
_inline = njit(cache=True, error_model="numpy", inline="always")


@intrinsic
def _atomic_add(typingctx, work, i, v):
    """work[i] += v as one atomic step (acquire-release); returns the value before."""
    if not (isinstance(work, types.Array) and work.dtype == types.int64 and work.ndim == 1):
        return None
    sig = types.int64(work, types.intp, types.int64)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.gep(builder, ary.data, args[1])
        return builder.atomic_rmw("add", ptr, args[2], "acq_rel")

    return sig, codegen


@_kernel
def _claim(work):
    """The next unclaimed work unit of this call (work[0] counts the units handed out)."""
    return _atomic_add(work, 0, 1)


@_kernel
def _next(work):
    """Count the unit just computed as done (work[1]), then claim the next one."""
    _atomic_add(work, 1, 1)
    return _atomic_add(work, 0, 1)


@_kernel
def _all_done(work, units):
    """Whether every unit is computed, with all their writes visible to this thread."""
    return _atomic_add(work, 1, 0) == units


# --------------------------------------------------------------------------- helpers
# Hot loops run over slice views with 0-based indices: numba then knows the index is
# non-negative, drops its wraparound code, and LLVM can vectorise the plain passes.

@_kernel
def _start1(a):
    for i in range(a.shape[0]):
        if a[i] == a[i]:
            return i
    return a.shape[0]


@_kernel
def _start2(a, b):
    for i in range(a.shape[0]):
        if a[i] == a[i] and b[i] == b[i]:
            return i
    return a.shape[0]


@_kernel
def _start3(a, b, c):
    for i in range(a.shape[0]):
        if a[i] == a[i] and b[i] == b[i] and c[i] == c[i]:
            return i
    return a.shape[0]


@_kernel
def _first_output(start, lookback, t):
    """Index of a row's first value, or t when the row is too short."""
    return start + lookback if start + lookback < t else t


@_kernel
def _nan_head(row, stop):
    row[:stop] = _NAN


@_kernel
def _plan(first, t):
    """Rows sorted by first output; the leading multiple of four (all with output) go in
    lanes. Returns (order, grouped, units): units are the lane groups, then one per row left."""
    order = np.argsort(first, kind="mergesort")
    grouped = 0
    while grouped + 4 <= first.shape[0] and first[order[grouped + 3]] < t:
        grouped += 4
    return order, grouped, grouped // 4 + first.shape[0] - grouped


@_kernel
def _unit_rows(order, grouped, u):
    """The rows of work unit u: a lane group's four, or (row, -1, -1, -1) for a row left over."""
    if 4 * u < grouped:
        g = 4 * u
        return order[g], order[g + 1], order[g + 2], order[g + 3]
    return order[grouped + u - grouped // 4], -1, -1, -1


@_kernel
def _nan_heads(out, first, a, b, c, d):
    for r in (a, b, c, d):
        if r >= 0:
            _nan_head(out[r], first[r])


@_kernel
def _true_range(high, low, prev_close):
    tr = high - low
    a = abs(high - prev_close)
    tr = a if a > tr else tr
    b = abs(low - prev_close)
    return b if b > tr else tr


@_kernel
def _divide_tail(row, first, n):
    r = row[first:]
    for i in range(r.shape[0]):
        r[i] = r[i] / n


@_kernel
def _div_n(a, n, inv):
    """a / n correctly rounded, without a division instruction: q = a * RN(1/n) is within
    one ulp, and one fma correction gives RN(a / n) (Markstein's theorem), so this equals
    TA-Lib's a / n bit for bit. Inside recurrences the divider's throughput is the limit."""
    q = a * inv
    return _fma(_fma(-q, n, a), inv, q)


# --------------------------------------------------------------------------- SMA
# TA-Lib's running sum: tmp = total + x[t]; out = tmp / n; total = tmp - x[t - n + 1].
# The chains store tmp; the division is a separate (vectorised) pass.

@_kernel
def _sma_seed(x, first, n):
    total = 0.0
    for v in x[first - n + 1:first]:
        total += v
    return total


@_kernel
def _sma_run(x, n, out, total, t_from, t_to):
    cur = x[t_from:t_to]
    old = x[t_from - n + 1:]
    dst = out[t_from:t_to]
    for i in range(cur.shape[0]):
        tmp = total + cur[i]
        dst[i] = tmp
        total = tmp - old[i]
    return total


@_kernel
def _sma_single(x, n, out, first):
    _sma_run(x, n, out, _sma_seed(x, first, n), first, x.shape[0])
    _divide_tail(out, first, n)


@_inline
def _sma_lanes(x0, x1, x2, x3, n, o0, o1, o2, o3, f0, f1, f2, f3):
    t0 = max(max(f0, f1), max(f2, f3))
    a0 = _sma_run(x0, n, o0, _sma_seed(x0, f0, n), f0, t0)
    a1 = _sma_run(x1, n, o1, _sma_seed(x1, f1, n), f1, t0)
    a2 = _sma_run(x2, n, o2, _sma_seed(x2, f2, n), f2, t0)
    a3 = _sma_run(x3, n, o3, _sma_seed(x3, f3, n), f3, t0)
    k = t0 - n + 1
    c0, c1, c2, c3 = x0[t0:], x1[t0:], x2[t0:], x3[t0:]
    d0, d1, d2, d3 = x0[k:], x1[k:], x2[k:], x3[k:]
    p0, p1, p2, p3 = o0[t0:], o1[t0:], o2[t0:], o3[t0:]
    for i in range(c0.shape[0]):
        m0 = a0 + c0[i]
        m1 = a1 + c1[i]
        m2 = a2 + c2[i]
        m3 = a3 + c3[i]
        p0[i] = m0
        p1[i] = m1
        p2[i] = m2
        p3[i] = m3
        a0 = m0 - d0[i]
        a1 = m1 - d1[i]
        a2 = m2 - d2[i]
        a3 = m3 - d3[i]
    _divide_tail(o0, f0, n)
    _divide_tail(o1, f1, n)
    _divide_tail(o2, f2, n)
    _divide_tail(o3, f3, n)


@_inline
def _sma_unit(order, grouped, first, u, x, n, out):
    a, b, c, d = _unit_rows(order, grouped, u)
    _nan_heads(out, first, a, b, c, d)
    if d >= 0:
        _sma_lanes(x[a], x[b], x[c], x[d], n, out[a], out[b], out[c], out[d],
                   first[a], first[b], first[c], first[d])
    elif first[a] < x.shape[1]:
        _sma_single(x[a], n, out[a], first[a])


@_kernel
def _sma_2d(x, n, out, work):
    rows, t = x.shape
    first = np.empty(rows, np.int64)
    for r in range(rows):
        first[r] = _first_output(_start1(x[r]), n - 1, t)
    order, grouped, units = _plan(first, t)
    u = _claim(work)
    while u < units:
        _sma_unit(order, grouped, first, u, x, n, out)
        u = _next(work)
    return _all_done(work, units)


# --------------------------------------------------------------------------- EMA
# Seed: SMA of the first n values; then prev = fma(x - prev, k, prev), k = 2 / (n + 1).

@_kernel
def _ema_seed(x, first, n):
    total = 0.0
    for v in x[first - n + 1:first + 1]:
        total += v
    return total / n


@_kernel
def _ema_run(x, k, out, prev, t_from, t_to):
    cur = x[t_from:t_to]
    dst = out[t_from:t_to]
    for i in range(cur.shape[0]):
        prev = _fma(cur[i] - prev, k, prev)
        dst[i] = prev
    return prev


@_kernel
def _ema_single(x, n, out, first):
    prev = _ema_seed(x, first, n)
    out[first] = prev
    _ema_run(x, 2.0 / (n + 1), out, prev, first + 1, x.shape[0])


@_inline
def _ema_lanes(x0, x1, x2, x3, n, o0, o1, o2, o3, f0, f1, f2, f3):
    k = 2.0 / (n + 1)
    t0 = max(max(f0, f1), max(f2, f3)) + 1
    e0, e1, e2, e3 = _ema_seed(x0, f0, n), _ema_seed(x1, f1, n), _ema_seed(x2, f2, n), _ema_seed(x3, f3, n)
    o0[f0], o1[f1], o2[f2], o3[f3] = e0, e1, e2, e3
    e0 = _ema_run(x0, k, o0, e0, f0 + 1, t0)
    e1 = _ema_run(x1, k, o1, e1, f1 + 1, t0)
    e2 = _ema_run(x2, k, o2, e2, f2 + 1, t0)
    e3 = _ema_run(x3, k, o3, e3, f3 + 1, t0)
    c0, c1, c2, c3 = x0[t0:], x1[t0:], x2[t0:], x3[t0:]
    p0, p1, p2, p3 = o0[t0:], o1[t0:], o2[t0:], o3[t0:]
    for i in range(c0.shape[0]):
        e0 = _fma(c0[i] - e0, k, e0)
        e1 = _fma(c1[i] - e1, k, e1)
        e2 = _fma(c2[i] - e2, k, e2)
        e3 = _fma(c3[i] - e3, k, e3)
        p0[i] = e0
        p1[i] = e1
        p2[i] = e2
        p3[i] = e3


@_inline
def _ema_unit(order, grouped, first, u, x, n, out):
    a, b, c, d = _unit_rows(order, grouped, u)
    _nan_heads(out, first, a, b, c, d)
    if n == 1:  # TA-Lib copies the input for a period of 1
        for r in (a, b, c, d):
            if r >= 0:
                out[r, first[r]:] = x[r, first[r]:]
    elif d >= 0:
        _ema_lanes(x[a], x[b], x[c], x[d], n, out[a], out[b], out[c], out[d],
                   first[a], first[b], first[c], first[d])
    elif first[a] < x.shape[1]:
        _ema_single(x[a], n, out[a], first[a])


@_kernel
def _ema_2d(x, n, out, work):
    rows, t = x.shape
    first = np.empty(rows, np.int64)
    for r in range(rows):
        first[r] = _first_output(_start1(x[r]), n - 1, t)
    order, grouped, units = _plan(first, t)
    u = _claim(work)
    while u < units:
        _ema_unit(order, grouped, first, u, x, n, out)
        u = _next(work)
    return _all_done(work, units)


# --------------------------------------------------------------------------- RSI
# Wilder smoothing by multiplication with 1/n, as current TA-Lib does. The chains store the
# average gain (out) and gain + loss (scratch); rsi = gain / total * 100 is a pass.

@_kernel
def _rsi_window(x, first, n):
    inv = 1.0 / n
    gain = 0.0
    loss = 0.0
    for i in range(first - n + 1, first + 1):
        d = x[i] - x[i - 1]
        g = d if d > 0.0 else 0.0
        gain += g
        loss += g - d
    return gain * inv, loss * inv


@_kernel
def _rsi_run(x, n, out, total, gain, loss, t_from, t_to):
    inv = 1.0 / n
    w = float(n - 1)
    cur = x[t_from:t_to]
    prev = x[t_from - 1:]
    g_out = out[t_from:t_to]
    t_out = total[t_from:t_to]
    for i in range(cur.shape[0]):
        d = cur[i] - prev[i]
        g = d if d > 0.0 else 0.0
        gain = (gain * w + g) * inv
        loss = (loss * w + (g - d)) * inv
        g_out[i] = gain
        t_out[i] = gain + loss
    return gain, loss


@_kernel
def _rsi_seed(x, first, n, out, total):
    gain, loss = _rsi_window(x, first, n)
    out[first] = gain
    total[first] = gain + loss
    return gain, loss


@_kernel
def _rsi_finish(out, total, first):
    g = out[first:]
    tt = total[first:]
    for i in range(g.shape[0]):
        tot = tt[i]
        v = g[i] / tot * 100.0
        g[i] = v if tot > 0.0 else 0.0


@_inline
def _rsi_lanes(x0, x1, x2, x3, n, o0, o1, o2, o3, s0, s1, s2, s3, f0, f1, f2, f3):
    inv = 1.0 / n
    w = float(n - 1)
    t0 = max(max(f0, f1), max(f2, f3)) + 1
    g0, l0 = _rsi_run(x0, n, o0, s0, *_rsi_seed(x0, f0, n, o0, s0), f0 + 1, t0)
    g1, l1 = _rsi_run(x1, n, o1, s1, *_rsi_seed(x1, f1, n, o1, s1), f1 + 1, t0)
    g2, l2 = _rsi_run(x2, n, o2, s2, *_rsi_seed(x2, f2, n, o2, s2), f2 + 1, t0)
    g3, l3 = _rsi_run(x3, n, o3, s3, *_rsi_seed(x3, f3, n, o3, s3), f3 + 1, t0)
    c0, c1, c2, c3 = x0[t0:], x1[t0:], x2[t0:], x3[t0:]
    b0, b1, b2, b3 = x0[t0 - 1:], x1[t0 - 1:], x2[t0 - 1:], x3[t0 - 1:]
    p0, p1, p2, p3 = o0[t0:], o1[t0:], o2[t0:], o3[t0:]
    q0, q1, q2, q3 = s0[t0:], s1[t0:], s2[t0:], s3[t0:]
    for i in range(c0.shape[0]):
        d0 = c0[i] - b0[i]
        d1 = c1[i] - b1[i]
        d2 = c2[i] - b2[i]
        d3 = c3[i] - b3[i]
        u0 = d0 if d0 > 0.0 else 0.0
        u1 = d1 if d1 > 0.0 else 0.0
        u2 = d2 if d2 > 0.0 else 0.0
        u3 = d3 if d3 > 0.0 else 0.0
        g0 = (g0 * w + u0) * inv
        g1 = (g1 * w + u1) * inv
        g2 = (g2 * w + u2) * inv
        g3 = (g3 * w + u3) * inv
        l0 = (l0 * w + (u0 - d0)) * inv
        l1 = (l1 * w + (u1 - d1)) * inv
        l2 = (l2 * w + (u2 - d2)) * inv
        l3 = (l3 * w + (u3 - d3)) * inv
        p0[i], q0[i] = g0, g0 + l0
        p1[i], q1[i] = g1, g1 + l1
        p2[i], q2[i] = g2, g2 + l2
        p3[i], q3[i] = g3, g3 + l3
    _rsi_finish(o0, s0, f0)
    _rsi_finish(o1, s1, f1)
    _rsi_finish(o2, s2, f2)
    _rsi_finish(o3, s3, f3)


@_inline
def _rsi_unit(order, grouped, first, u, x, n, out, scratch):
    a, b, c, d = _unit_rows(order, grouped, u)
    _nan_heads(out, first, a, b, c, d)
    if d >= 0:
        _rsi_lanes(x[a], x[b], x[c], x[d], n, out[a], out[b], out[c], out[d],
                   scratch[0], scratch[1], scratch[2], scratch[3],
                   first[a], first[b], first[c], first[d])
    elif first[a] < x.shape[1]:
        f = first[a]
        _rsi_run(x[a], n, out[a], scratch[0], *_rsi_seed(x[a], f, n, out[a], scratch[0]), f + 1, x.shape[1])
        _rsi_finish(out[a], scratch[0], f)


@_kernel
def _rsi_2d(x, n, out, work):
    rows, t = x.shape
    scratch = np.empty((4, t))  # average gain + loss of four rows
    first = np.empty(rows, np.int64)
    for r in range(rows):
        first[r] = _first_output(_start1(x[r]), n, t)
    order, grouped, units = _plan(first, t)
    u = _claim(work)
    while u < units:
        _rsi_unit(order, grouped, first, u, x, n, out, scratch)
        u = _next(work)
    return _all_done(work, units)


# --------------------------------------------------------------------------- MACD
# TA-Lib seeds the fast EMA on the last `fast` values of the slow EMA's seed window, so
# both start together; the signal EMA is seeded with the mean of the first MACD values.

@_kernel
def _macd_seed(x, first, fast, slow, signal, om, osig, oh):
    s = first - (slow + signal - 2)
    k_slow = 2.0 / (slow + 1)
    k_fast = 2.0 / (fast + 1)
    sum_slow = 0.0
    for v in x[s:s + slow]:
        sum_slow += v
    sum_fast = 0.0
    for v in x[s + slow - fast:s + slow]:
        sum_fast += v
    e_slow = sum_slow / slow
    e_fast = sum_fast / fast
    m = e_fast - e_slow
    sum_m = m + 0.0
    for v in x[s + slow:first + 1]:
        e_slow = _fma(v - e_slow, k_slow, e_slow)
        e_fast = _fma(v - e_fast, k_fast, e_fast)
        m = e_fast - e_slow
        sum_m += m
    sig = sum_m / signal
    om[first] = m
    osig[first] = sig
    oh[first] = m - sig
    return e_slow, e_fast, sig


@_kernel
def _macd_run(x, fast, slow, signal, om, osig, oh, e_slow, e_fast, sig, t_from, t_to):
    k_slow = 2.0 / (slow + 1)
    k_fast = 2.0 / (fast + 1)
    k_sig = 2.0 / (signal + 1)
    cur = x[t_from:t_to]
    dm, ds, dh = om[t_from:t_to], osig[t_from:t_to], oh[t_from:t_to]
    for i in range(cur.shape[0]):
        v = cur[i]
        e_slow = _fma(v - e_slow, k_slow, e_slow)
        e_fast = _fma(v - e_fast, k_fast, e_fast)
        m = e_fast - e_slow
        sig = m if signal == 1 else _fma(m - sig, k_sig, sig)  # TA-Lib copies for 1
        dm[i] = m
        ds[i] = sig
        dh[i] = m - sig
    return e_slow, e_fast, sig


@_inline
def _macd_lanes(x0, x1, x2, x3, fast, slow, signal, m0, m1, m2, m3, q0, q1, q2, q3,
                h0, h1, h2, h3, f0, f1, f2, f3):
    k_slow = 2.0 / (slow + 1)
    k_fast = 2.0 / (fast + 1)
    k_sig = 2.0 / (signal + 1)
    t0 = max(max(f0, f1), max(f2, f3)) + 1
    a0, b0, c0 = _macd_run(x0, fast, slow, signal, m0, q0, h0,
                           *_macd_seed(x0, f0, fast, slow, signal, m0, q0, h0), f0 + 1, t0)
    a1, b1, c1 = _macd_run(x1, fast, slow, signal, m1, q1, h1,
                           *_macd_seed(x1, f1, fast, slow, signal, m1, q1, h1), f1 + 1, t0)
    a2, b2, c2 = _macd_run(x2, fast, slow, signal, m2, q2, h2,
                           *_macd_seed(x2, f2, fast, slow, signal, m2, q2, h2), f2 + 1, t0)
    a3, b3, c3 = _macd_run(x3, fast, slow, signal, m3, q3, h3,
                           *_macd_seed(x3, f3, fast, slow, signal, m3, q3, h3), f3 + 1, t0)
    y0, y1, y2, y3 = x0[t0:], x1[t0:], x2[t0:], x3[t0:]
    dm0, dm1, dm2, dm3 = m0[t0:], m1[t0:], m2[t0:], m3[t0:]
    ds0, ds1, ds2, ds3 = q0[t0:], q1[t0:], q2[t0:], q3[t0:]
    dh0, dh1, dh2, dh3 = h0[t0:], h1[t0:], h2[t0:], h3[t0:]
    for i in range(y0.shape[0]):
        v0, v1, v2, v3 = y0[i], y1[i], y2[i], y3[i]
        a0 = _fma(v0 - a0, k_slow, a0)
        a1 = _fma(v1 - a1, k_slow, a1)
        a2 = _fma(v2 - a2, k_slow, a2)
        a3 = _fma(v3 - a3, k_slow, a3)
        b0 = _fma(v0 - b0, k_fast, b0)
        b1 = _fma(v1 - b1, k_fast, b1)
        b2 = _fma(v2 - b2, k_fast, b2)
        b3 = _fma(v3 - b3, k_fast, b3)
        d0, d1, d2, d3 = b0 - a0, b1 - a1, b2 - a2, b3 - a3
        copy = signal == 1
        c0 = d0 if copy else _fma(d0 - c0, k_sig, c0)
        c1 = d1 if copy else _fma(d1 - c1, k_sig, c1)
        c2 = d2 if copy else _fma(d2 - c2, k_sig, c2)
        c3 = d3 if copy else _fma(d3 - c3, k_sig, c3)
        dm0[i], ds0[i], dh0[i] = d0, c0, d0 - c0
        dm1[i], ds1[i], dh1[i] = d1, c1, d1 - c1
        dm2[i], ds2[i], dh2[i] = d2, c2, d2 - c2
        dm3[i], ds3[i], dh3[i] = d3, c3, d3 - c3


@_inline
def _macd_unit(order, grouped, first, u, x, fast, slow, signal, om, osig, oh):
    a, b, c, d = _unit_rows(order, grouped, u)
    _nan_heads(om, first, a, b, c, d)
    _nan_heads(osig, first, a, b, c, d)
    _nan_heads(oh, first, a, b, c, d)
    if d >= 0:
        _macd_lanes(x[a], x[b], x[c], x[d], fast, slow, signal,
                    om[a], om[b], om[c], om[d], osig[a], osig[b], osig[c], osig[d],
                    oh[a], oh[b], oh[c], oh[d], first[a], first[b], first[c], first[d])
    elif first[a] < x.shape[1]:
        f = first[a]
        _macd_run(x[a], fast, slow, signal, om[a], osig[a], oh[a],
                  *_macd_seed(x[a], f, fast, slow, signal, om[a], osig[a], oh[a]), f + 1, x.shape[1])


@_kernel
def _macd_2d(x, fast, slow, signal, om, osig, oh, work):
    rows, t = x.shape
    first = np.empty(rows, np.int64)
    for r in range(rows):
        first[r] = _first_output(_start1(x[r]), slow + signal - 2, t)
    order, grouped, units = _plan(first, t)
    u = _claim(work)
    while u < units:
        _macd_unit(order, grouped, first, u, x, fast, slow, signal, om, osig, oh)
        u = _next(work)
    return _all_done(work, units)


# --------------------------------------------------------------------------- BBANDS
# Population variance from sums of values shifted by a reference near the mean (no
# catastrophic cancellation at BTC prices); the reference is re-centred on the window
# mean when the sums lose precision or every 32 n steps, exactly when TA-Lib does it.
# The chains store the running total (middle) and the variance (upper); _bbands_finish
# turns them into the bands.

@_kernel
def _bbands_seed(x, first, n):
    shift = x[first - n + 1]
    total = 0.0
    s1 = 0.0
    s2 = 0.0
    for v in x[first - n + 1:first]:
        total += v
        d = v - shift
        s1 += d
        s2 += d * d
    return shift, total, s1, s2, 32 * n


@_kernel
def _bbands_step(xi, xt, inv, shift, total, s1, s2, budget):
    """One window: new sums, the running total, the variance, and whether the reference
    must be re-centred (the caller then calls _bbands_recentre)."""
    total = xi + total
    d = xi - shift
    s1 = d + s1
    s2 = d * d + s2
    m1 = s1 * inv
    var = s2 * inv - m1 * m1
    mid_sum = total
    total -= xt
    dt = xt - shift
    dt2 = dt * dt
    s2 -= dt2
    s1 -= dt
    recentre = True
    if s2 * inv * 1e-6 <= var or not (var == var and s2 == s2):
        if not dt2 > s2 * 1e6:
            budget -= 1
            recentre = budget == 0
    return shift, total, s1, s2, budget, mid_sum, var, recentre


@_kernel
def _bbands_recentre(x, t, n, inv):
    """Shift on the window mean and recompute its sums exactly; then drop the oldest value."""
    window = x[t - n + 1:t + 1]
    acc = 0.0
    for v in window:
        acc += v
    shift = acc * inv
    s1 = 0.0
    s2 = 0.0
    for v in window:
        e = v - shift
        s1 += e
        s2 += e * e
    m1 = s1 * inv
    mean2 = s2 * inv
    var = mean2 - m1 * m1
    if mean2 * 1e-12 > var:
        var = 0.0
    dt = window[0] - shift
    return shift, s1 - dt, s2 - dt * dt, var


@_kernel
def _bbands_run(x, n, middle, upper, state, t_from, t_to):
    inv = 1.0 / n
    shift, total, s1, s2, budget = state
    cur = x[t_from:t_to]
    old = x[t_from - n + 1:]
    mid = middle[t_from:t_to]
    upr = upper[t_from:t_to]
    for i in range(cur.shape[0]):
        shift, total, s1, s2, budget, mid[i], var, recentre = _bbands_step(
            cur[i], old[i], inv, shift, total, s1, s2, budget)
        if recentre:
            shift, s1, s2, var = _bbands_recentre(x, t_from + i, n, inv)
            budget = 32 * n
        upr[i] = var
    return shift, total, s1, s2, budget


@_kernel
def _bbands_finish(n, up, dn, upper, middle, lower, first):
    u = upper[first:]
    m = middle[first:]
    lo = lower[first:]
    same = up == dn
    for i in range(u.shape[0]):
        var = u[i]
        mid = m[i] / n
        sd = np.sqrt(var) if var != 0.0 else 0.0
        w = sd * up
        m[i] = mid
        u[i] = mid + w if same else _fma(up, sd, mid)
        lo[i] = mid - w if same else mid - dn * sd


@_inline
def _bbands_lanes(x0, x1, x2, x3, n, u0, u1, u2, u3, m0, m1, m2, m3, f0, f1, f2, f3):
    inv = 1.0 / n
    t0 = max(max(f0, f1), max(f2, f3))
    sh0, to0, a0, b0, c0 = _bbands_run(x0, n, m0, u0, _bbands_seed(x0, f0, n), f0, t0)
    sh1, to1, a1, b1, c1 = _bbands_run(x1, n, m1, u1, _bbands_seed(x1, f1, n), f1, t0)
    sh2, to2, a2, b2, c2 = _bbands_run(x2, n, m2, u2, _bbands_seed(x2, f2, n), f2, t0)
    sh3, to3, a3, b3, c3 = _bbands_run(x3, n, m3, u3, _bbands_seed(x3, f3, n), f3, t0)
    k = t0 - n + 1
    y0, y1, y2, y3 = x0[t0:], x1[t0:], x2[t0:], x3[t0:]
    z0, z1, z2, z3 = x0[k:], x1[k:], x2[k:], x3[k:]
    dm0, dm1, dm2, dm3 = m0[t0:], m1[t0:], m2[t0:], m3[t0:]
    du0, du1, du2, du3 = u0[t0:], u1[t0:], u2[t0:], u3[t0:]
    full = 32 * n
    for i in range(y0.shape[0]):
        sh0, to0, a0, b0, c0, dm0[i], v0, q0 = _bbands_step(y0[i], z0[i], inv, sh0, to0, a0, b0, c0)
        sh1, to1, a1, b1, c1, dm1[i], v1, q1 = _bbands_step(y1[i], z1[i], inv, sh1, to1, a1, b1, c1)
        sh2, to2, a2, b2, c2, dm2[i], v2, q2 = _bbands_step(y2[i], z2[i], inv, sh2, to2, a2, b2, c2)
        sh3, to3, a3, b3, c3, dm3[i], v3, q3 = _bbands_step(y3[i], z3[i], inv, sh3, to3, a3, b3, c3)
        if q0 | q1 | q2 | q3:  # rare: about once per 32 n candles per row
            if q0:
                sh0, a0, b0, v0 = _bbands_recentre(x0, t0 + i, n, inv)
                c0 = full
            if q1:
                sh1, a1, b1, v1 = _bbands_recentre(x1, t0 + i, n, inv)
                c1 = full
            if q2:
                sh2, a2, b2, v2 = _bbands_recentre(x2, t0 + i, n, inv)
                c2 = full
            if q3:
                sh3, a3, b3, v3 = _bbands_recentre(x3, t0 + i, n, inv)
                c3 = full
        du0[i] = v0
        du1[i] = v1
        du2[i] = v2
        du3[i] = v3


@_inline
def _bbands_unit(order, grouped, first, u, x, n, up, dn, upper, middle, lower):
    a, b, c, d = _unit_rows(order, grouped, u)
    _nan_heads(upper, first, a, b, c, d)
    _nan_heads(middle, first, a, b, c, d)
    _nan_heads(lower, first, a, b, c, d)
    if d >= 0:
        _bbands_lanes(x[a], x[b], x[c], x[d], n, upper[a], upper[b], upper[c], upper[d],
                      middle[a], middle[b], middle[c], middle[d],
                      first[a], first[b], first[c], first[d])
    elif first[a] < x.shape[1]:
        _bbands_run(x[a], n, middle[a], upper[a], _bbands_seed(x[a], first[a], n), first[a], x.shape[1])
    for r in (a, b, c, d):
        if r >= 0:
            _bbands_finish(n, up, dn, upper[r], middle[r], lower[r], first[r])


@_kernel
def _bbands_2d(x, n, up, dn, upper, middle, lower, work):
    rows, t = x.shape
    first = np.empty(rows, np.int64)
    for r in range(rows):
        first[r] = _first_output(_start1(x[r]), n - 1, t)
    order, grouped, units = _plan(first, t)
    u = _claim(work)
    while u < units:
        _bbands_unit(order, grouped, first, u, x, n, up, dn, upper, middle, lower)
        u = _next(work)
    return _all_done(work, units)


# --------------------------------------------------------------------------- ATR
# Seed: mean true range of the first n candles after the start; then
# atr = fma(atr, (n - 1) / n, tr * (1 - (n - 1) / n)), TA-Lib's fused Wilder step.

@_kernel
def _atr_seed(high, low, close, first, n, out):
    total = 0.0
    for i in range(first - n + 1, first + 1):
        total += _true_range(high[i], low[i], close[i - 1])
    prev = total / n
    out[first] = prev
    return prev


@_kernel
def _atr_terms(high, low, close, n, out, t_from, t_to):
    """tr * (1 - w) into out: the part of each step that does not depend on the last ATR."""
    u = 1.0 - (n - 1) / n
    h = high[t_from:t_to]
    lo = low[t_from:t_to]
    pc = close[t_from - 1:]
    dst = out[t_from:t_to]
    for i in range(h.shape[0]):
        dst[i] = _true_range(h[i], lo[i], pc[i]) * u


@_kernel
def _atr_run(high, low, close, n, out, prev, t_from, t_to):
    w = (n - 1) / n
    _atr_terms(high, low, close, n, out, t_from, t_to)
    dst = out[t_from:t_to]
    for i in range(dst.shape[0]):
        prev = _fma(prev, w, dst[i])
        dst[i] = prev
    return prev


@_inline
def _atr_lanes(h0, h1, h2, h3, l0, l1, l2, l3, c0, c1, c2, c3, n, o0, o1, o2, o3,
               f0, f1, f2, f3):
    w = (n - 1) / n
    t = h0.shape[0]
    t0 = max(max(f0, f1), max(f2, f3)) + 1
    a0 = _atr_run(h0, l0, c0, n, o0, _atr_seed(h0, l0, c0, f0, n, o0), f0 + 1, t0)
    a1 = _atr_run(h1, l1, c1, n, o1, _atr_seed(h1, l1, c1, f1, n, o1), f1 + 1, t0)
    a2 = _atr_run(h2, l2, c2, n, o2, _atr_seed(h2, l2, c2, f2, n, o2), f2 + 1, t0)
    a3 = _atr_run(h3, l3, c3, n, o3, _atr_seed(h3, l3, c3, f3, n, o3), f3 + 1, t0)
    _atr_terms(h0, l0, c0, n, o0, t0, t)
    _atr_terms(h1, l1, c1, n, o1, t0, t)
    _atr_terms(h2, l2, c2, n, o2, t0, t)
    _atr_terms(h3, l3, c3, n, o3, t0, t)
    d0, d1, d2, d3 = o0[t0:], o1[t0:], o2[t0:], o3[t0:]
    for i in range(d0.shape[0]):
        a0 = _fma(a0, w, d0[i])
        a1 = _fma(a1, w, d1[i])
        a2 = _fma(a2, w, d2[i])
        a3 = _fma(a3, w, d3[i])
        d0[i] = a0
        d1[i] = a1
        d2[i] = a2
        d3[i] = a3


@_inline
def _atr_unit(order, grouped, first, u, high, low, close, n, out):
    a, b, c, d = _unit_rows(order, grouped, u)
    _nan_heads(out, first, a, b, c, d)
    if d >= 0:
        _atr_lanes(high[a], high[b], high[c], high[d], low[a], low[b], low[c], low[d],
                   close[a], close[b], close[c], close[d], n, out[a], out[b], out[c], out[d],
                   first[a], first[b], first[c], first[d])
    elif first[a] < high.shape[1]:
        f = first[a]
        _atr_run(high[a], low[a], close[a], n, out[a],
                 _atr_seed(high[a], low[a], close[a], f, n, out[a]), f + 1, high.shape[1])


@_kernel
def _atr_2d(high, low, close, n, out, work):
    rows, t = high.shape
    first = np.empty(rows, np.int64)
    for r in range(rows):
        first[r] = _first_output(_start3(high[r], low[r], close[r]), n, t)
    order, grouped, units = _plan(first, t)
    u = _claim(work)
    while u < units:
        _atr_unit(order, grouped, first, u, high, low, close, n, out)
        u = _next(work)
    return _all_done(work, units)


# --------------------------------------------------------------------------- ADX
# After the seed: (1) a vectorised pass for each candle's -DM, +DM and true range,
# (2) Wilder's running sums of the three, v = v - v / n + term (four rows in lockstep),
# (3) DX from them, vectorised (-1 marks "no update": TA-Lib skips candles with a zero
# true range or a zero DI sum), (4) the ADX recurrence.

@_kernel
def _adx_seed(high, low, close, first, n, out):
    s = first - (2 * n - 1)
    minus_dm = 0.0
    plus_dm = 0.0
    tr = 0.0
    sum_dx = 0.0
    for today in range(s + 1, first + 1):
        hi = high[today]
        lo = low[today]
        up = hi - high[today - 1]
        down = low[today - 1] - lo
        smoothing = today >= s + n
        if smoothing:
            minus_dm -= minus_dm / n
            plus_dm -= plus_dm / n
        if down > 0.0 and up < down:
            minus_dm += down
        elif up > 0.0 and up > down:
            plus_dm += up
        if smoothing:
            tr = tr - tr / n + _true_range(hi, lo, close[today - 1])
        else:
            tr += _true_range(hi, lo, close[today - 1])
        if smoothing and tr > 0.0:
            mdi = minus_dm / tr * 100.0
            pdi = plus_dm / tr * 100.0
            di_sum = mdi + pdi
            if not (-_EPS < di_sum and di_sum < _EPS):
                sum_dx += abs(mdi - pdi) / di_sum * 100.0
    adx_v = sum_dx / n
    out[first] = adx_v
    return minus_dm, plus_dm, tr, adx_v


@_kernel
def _adx_terms(high, low, close, sm, sp, st, first):
    h = high[first:]
    hp = high[first - 1:]
    lo = low[first:]
    lp = low[first - 1:]
    pc = close[first - 1:]
    m, p, r = sm[first:], sp[first:], st[first:]
    for i in range(h.shape[0]):
        up = h[i] - hp[i]
        down = lp[i] - lo[i]
        m[i] = down if (down > 0.0) & (up < down) else 0.0
        p[i] = up if (up > 0.0) & (up > down) else 0.0
        r[i] = _true_range(h[i], lo[i], pc[i])


@_kernel
def _wilder_run(terms, v, n, t_from, t_to):
    """In place: terms[t] <- v = v - v / n + terms[t] (TA-Lib's DM and TR smoothing)."""
    nf = float(n)
    inv = 1.0 / nf
    a = terms[t_from:t_to]
    for i in range(a.shape[0]):
        v = v - _div_n(v, nf, inv) + a[i]
        a[i] = v
    return v


@_inline
def _wilder3_lanes(m0, m1, m2, m3, p0, p1, p2, p3, r0, r1, r2, r3, state, n, t0):
    """The three smoothings of four rows in one loop: twelve independent recurrences."""
    md0, md1, md2, md3, pd0, pd1, pd2, pd3, tr0, tr1, tr2, tr3 = state
    nf = float(n)
    inv = 1.0 / nf
    x0, x1, x2, x3 = m0[t0:], m1[t0:], m2[t0:], m3[t0:]
    y0, y1, y2, y3 = p0[t0:], p1[t0:], p2[t0:], p3[t0:]
    z0, z1, z2, z3 = r0[t0:], r1[t0:], r2[t0:], r3[t0:]
    for i in range(x0.shape[0]):
        md0 = md0 - _div_n(md0, nf, inv) + x0[i]
        md1 = md1 - _div_n(md1, nf, inv) + x1[i]
        md2 = md2 - _div_n(md2, nf, inv) + x2[i]
        md3 = md3 - _div_n(md3, nf, inv) + x3[i]
        pd0 = pd0 - _div_n(pd0, nf, inv) + y0[i]
        pd1 = pd1 - _div_n(pd1, nf, inv) + y1[i]
        pd2 = pd2 - _div_n(pd2, nf, inv) + y2[i]
        pd3 = pd3 - _div_n(pd3, nf, inv) + y3[i]
        tr0 = tr0 - _div_n(tr0, nf, inv) + z0[i]
        tr1 = tr1 - _div_n(tr1, nf, inv) + z1[i]
        tr2 = tr2 - _div_n(tr2, nf, inv) + z2[i]
        tr3 = tr3 - _div_n(tr3, nf, inv) + z3[i]
        x0[i], x1[i], x2[i], x3[i] = md0, md1, md2, md3
        y0[i], y1[i], y2[i], y3[i] = pd0, pd1, pd2, pd3
        z0[i], z1[i], z2[i], z3[i] = tr0, tr1, tr2, tr3


@_kernel
def _adx_dx(sm, sp, st, first):
    """DX into sm; -1 where TA-Lib leaves ADX unchanged."""
    m = sm[first:]
    p = sp[first:]
    r = st[first:]
    for i in range(m.shape[0]):
        tr = r[i]
        mdi = m[i] / tr * 100.0
        pdi = p[i] / tr * 100.0
        di_sum = mdi + pdi
        dx = abs(mdi - pdi) / di_sum * 100.0
        skip = (not tr > 0.0) | ((-_EPS < di_sum) & (di_sum < _EPS))
        m[i] = -1.0 if skip else dx


@_kernel
def _adx_run(dx, n, out, adx_v, t_from, t_to):
    w = float(n - 1)
    nf = float(n)
    inv = 1.0 / nf
    d = dx[t_from:t_to]
    dst = out[t_from:t_to]
    for i in range(d.shape[0]):
        nxt = _div_n(adx_v * w + d[i], nf, inv)
        adx_v = adx_v if d[i] < 0.0 else nxt
        dst[i] = adx_v
    return adx_v


@_kernel
def _adx_single(high, low, close, n, out, sm, sp, st, first):
    minus_dm, plus_dm, tr, adx_v = _adx_seed(high, low, close, first, n, out)
    t = high.shape[0]
    _adx_terms(high, low, close, sm, sp, st, first + 1)
    _wilder_run(sm, minus_dm, n, first + 1, t)
    _wilder_run(sp, plus_dm, n, first + 1, t)
    _wilder_run(st, tr, n, first + 1, t)
    _adx_dx(sm, sp, st, first + 1)
    _adx_run(sm, n, out, adx_v, first + 1, t)


@_inline
def _adx_lanes(h0, h1, h2, h3, l0, l1, l2, l3, c0, c1, c2, c3, n, o0, o1, o2, o3,
               scratch, f0, f1, f2, f3):
    m0, m1, m2, m3 = scratch[0], scratch[1], scratch[2], scratch[3]
    p0, p1, p2, p3 = scratch[4], scratch[5], scratch[6], scratch[7]
    r0, r1, r2, r3 = scratch[8], scratch[9], scratch[10], scratch[11]
    md0, pd0, tr0, a0 = _adx_seed(h0, l0, c0, f0, n, o0)
    md1, pd1, tr1, a1 = _adx_seed(h1, l1, c1, f1, n, o1)
    md2, pd2, tr2, a2 = _adx_seed(h2, l2, c2, f2, n, o2)
    md3, pd3, tr3, a3 = _adx_seed(h3, l3, c3, f3, n, o3)
    g0, g1, g2, g3 = f0 + 1, f1 + 1, f2 + 1, f3 + 1
    _adx_terms(h0, l0, c0, m0, p0, r0, g0)
    _adx_terms(h1, l1, c1, m1, p1, r1, g1)
    _adx_terms(h2, l2, c2, m2, p2, r2, g2)
    _adx_terms(h3, l3, c3, m3, p3, r3, g3)
    t0 = max(max(g0, g1), max(g2, g3))
    state = (_wilder_run(m0, md0, n, g0, t0), _wilder_run(m1, md1, n, g1, t0),
             _wilder_run(m2, md2, n, g2, t0), _wilder_run(m3, md3, n, g3, t0),
             _wilder_run(p0, pd0, n, g0, t0), _wilder_run(p1, pd1, n, g1, t0),
             _wilder_run(p2, pd2, n, g2, t0), _wilder_run(p3, pd3, n, g3, t0),
             _wilder_run(r0, tr0, n, g0, t0), _wilder_run(r1, tr1, n, g1, t0),
             _wilder_run(r2, tr2, n, g2, t0), _wilder_run(r3, tr3, n, g3, t0))
    _wilder3_lanes(m0, m1, m2, m3, p0, p1, p2, p3, r0, r1, r2, r3, state, n, t0)
    _adx_dx(m0, p0, r0, g0)
    _adx_dx(m1, p1, r1, g1)
    _adx_dx(m2, p2, r2, g2)
    _adx_dx(m3, p3, r3, g3)
    a0 = _adx_run(m0, n, o0, a0, g0, t0)
    a1 = _adx_run(m1, n, o1, a1, g1, t0)
    a2 = _adx_run(m2, n, o2, a2, g2, t0)
    a3 = _adx_run(m3, n, o3, a3, g3, t0)
    w = float(n - 1)
    nf = float(n)
    inv = 1.0 / nf
    x0, x1, x2, x3 = m0[t0:], m1[t0:], m2[t0:], m3[t0:]
    d0, d1, d2, d3 = o0[t0:], o1[t0:], o2[t0:], o3[t0:]
    for i in range(x0.shape[0]):
        e0, e1, e2, e3 = x0[i], x1[i], x2[i], x3[i]
        n0 = _div_n(a0 * w + e0, nf, inv)
        n1 = _div_n(a1 * w + e1, nf, inv)
        n2 = _div_n(a2 * w + e2, nf, inv)
        n3 = _div_n(a3 * w + e3, nf, inv)
        a0 = a0 if e0 < 0.0 else n0
        a1 = a1 if e1 < 0.0 else n1
        a2 = a2 if e2 < 0.0 else n2
        a3 = a3 if e3 < 0.0 else n3
        d0[i] = a0
        d1[i] = a1
        d2[i] = a2
        d3[i] = a3


@_inline
def _adx_unit(order, grouped, first, u, high, low, close, n, out, scratch):
    a, b, c, d = _unit_rows(order, grouped, u)
    _nan_heads(out, first, a, b, c, d)
    if d >= 0:
        _adx_lanes(high[a], high[b], high[c], high[d], low[a], low[b], low[c], low[d],
                   close[a], close[b], close[c], close[d], n, out[a], out[b], out[c], out[d],
                   scratch, first[a], first[b], first[c], first[d])
    elif first[a] < high.shape[1]:
        _adx_single(high[a], low[a], close[a], n, out[a], scratch[0], scratch[1], scratch[2], first[a])


@_kernel
def _adx_2d(high, low, close, n, out, work):
    rows, t = high.shape
    scratch = np.empty((12, t))  # -DM, +DM and TR sums of four rows
    first = np.empty(rows, np.int64)
    for r in range(rows):
        first[r] = _first_output(_start3(high[r], low[r], close[r]), 2 * n - 1, t)
    order, grouped, units = _plan(first, t)
    u = _claim(work)
    while u < units:
        _adx_unit(order, grouped, first, u, high, low, close, n, out, scratch)
        u = _next(work)
    return _all_done(work, units)


# --------------------------------------------------------------------------- STOCH
# Raw %K per row, then slow %K = SMA(raw) and slow %D = SMA(slow %K) in lanes.

@_kernel
def _stoch_raw_tracked(high, low, close, s, fastk, raw):
    """TA-Lib's own rolling extremes (index tracking); exact also with NaN inside."""
    lowest = 0.0
    highest = 0.0
    low_at = s - 1
    high_at = s - 1
    for today in range(s + fastk - 1, high.shape[0]):
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
        raw[today] = (close[today] - lowest) / diff * 100.0 if not scale >= abs(diff) else 0.0


@_kernel
def _stoch_raw_shifted(high, low, close, s, fastk, raw, hh, ll):
    """The same values for NaN-free rows, from branch-free max/min passes over shifted rows."""
    t = high.shape[0]
    k0 = s + fastk - 1
    hv = hh[k0:]
    lv = ll[k0:]
    hv[:] = high[k0:]
    lv[:] = low[k0:]
    for j in range(1, fastk):
        hs = high[k0 - j:t - j]
        ls = low[k0 - j:t - j]
        for i in range(hv.shape[0]):
            a = hs[i]
            b = ls[i]
            hv[i] = a if a > hv[i] else hv[i]
            lv[i] = b if b < lv[i] else lv[i]
    cv = close[k0:]
    rv = raw[k0:]
    for i in range(rv.shape[0]):
        highest = hv[i]
        lowest = lv[i]
        diff = highest - lowest
        scale = (abs(highest) + abs(lowest)) * _EPS
        v = (cv[i] - lowest) / diff * 100.0
        rv[i] = 0.0 if scale >= abs(diff) else v


@_kernel
def _has_nan3(a, b, c):
    found = False
    for i in range(a.shape[0]):  # an integer OR reduction: vectorised, no early exit
        found |= (a[i] != a[i]) | (b[i] != b[i]) | (c[i] != c[i])
    return found


@_kernel
def _stoch_raw(high, low, close, fastk, raw, hh, ll):
    s = _start3(high, low, close)
    if fastk <= _STOCH_SHIFT_MAX and not _has_nan3(high[s:], low[s:], close[s:]):
        _stoch_raw_shifted(high, low, close, s, fastk, raw, hh, ll)
    else:
        _stoch_raw_tracked(high, low, close, s, fastk, raw)
    return s + fastk - 1


@_kernel
def _smooth(src, n, dst, first):
    """TA-Lib's MA(SMA) step inside STOCH: a period of 1 copies instead of averaging."""
    if n == 1:
        dst[first:] = src[first:]
    else:
        _sma_single(src, n, dst, first)


@_inline
def _stoch_unit(order, grouped, first, u, high, low, close, fastk, slowk, slowd, out_k, out_d, scratch):
    a, b, c, d = _unit_rows(order, grouped, u)
    _nan_heads(out_d, first, a, b, c, d)
    if d >= 0:
        s = scratch
        k0 = _stoch_raw(high[a], low[a], close[a], fastk, s[0], s[4], s[5]) + slowk - 1
        k1 = _stoch_raw(high[b], low[b], close[b], fastk, s[1], s[4], s[5]) + slowk - 1
        k2 = _stoch_raw(high[c], low[c], close[c], fastk, s[2], s[4], s[5]) + slowk - 1
        k3 = _stoch_raw(high[d], low[d], close[d], fastk, s[3], s[4], s[5]) + slowk - 1
        _sma_lanes(s[0], s[1], s[2], s[3], slowk, out_k[a], out_k[b], out_k[c], out_k[d], k0, k1, k2, k3)
        _sma_lanes(out_k[a], out_k[b], out_k[c], out_k[d], slowd,
                   out_d[a], out_d[b], out_d[c], out_d[d], first[a], first[b], first[c], first[d])
    elif first[a] < high.shape[1]:
        raw_first = _stoch_raw(high[a], low[a], close[a], fastk, scratch[0], scratch[4], scratch[5])
        _smooth(scratch[0], slowk, out_k[a], raw_first + slowk - 1)
        _smooth(out_k[a], slowd, out_d[a], first[a])
    _nan_heads(out_k, first, a, b, c, d)  # slow %K exists before slow %D does: hide it


@_kernel
def _stoch_2d(high, low, close, fastk, slowk, slowd, out_k, out_d, work):
    rows, t = high.shape
    scratch = np.empty((6, t))  # raw %K of four rows, highest and lowest
    first = np.empty(rows, np.int64)
    lookback = fastk + slowk + slowd - 3
    for r in range(rows):
        first[r] = _first_output(_start3(high[r], low[r], close[r]), lookback, t)
    order, grouped, units = _plan(first, t)
    if slowk == 1 or slowd == 1:  # _smooth copies for a period of 1: no lanes
        grouped = 0
        units = rows
    u = _claim(work)
    while u < units:
        _stoch_unit(order, grouped, first, u, high, low, close, fastk, slowk, slowd,
                    out_k, out_d, scratch)
        u = _next(work)
    return _all_done(work, units)


# --------------------------------------------------------------------------- ROC, OBV

@_inline
def _roc_row(x, n, out):
    t = x.shape[0]
    first = _first_output(_start1(x), n, t)
    _nan_head(out, first)
    cur = x[first:]
    old = x[first - n:t - n]
    dst = out[first:]
    for i in range(cur.shape[0]):
        prev = old[i]
        v = (cur[i] / prev - 1.0) * 100.0
        dst[i] = v if prev != 0.0 else 0.0


@_kernel
def _roc_2d(x, n, out, work):
    rows = x.shape[0]
    r = _claim(work)
    while r < rows:
        _roc_row(x[r], n, out[r])
        r = _next(work)
    return _all_done(work, rows)


@_kernel
def _obv_step(acc, c, prev, v):
    # branch-free (up or down is a coin flip for the branch predictor); adding or
    # subtracting 0.0 leaves acc unchanged, so this is TA-Lib's acc += v / acc -= v
    up = v if c > prev else 0.0
    down = v if c < prev else 0.0
    return (acc + up) - down


@_kernel
def _obv_run(close, volume, out, acc, t_from, t_to):
    c = close[t_from:t_to]
    cp = close[t_from - 1:]
    v = volume[t_from:t_to]
    dst = out[t_from:t_to]
    for i in range(c.shape[0]):
        acc = _obv_step(acc, c[i], cp[i], v[i])
        dst[i] = acc
    return acc


@_inline
def _obv_lanes(c0, c1, c2, c3, v0, v1, v2, v3, o0, o1, o2, o3, f0, f1, f2, f3):
    t0 = max(max(f0, f1), max(f2, f3)) + 1
    o0[f0], o1[f1], o2[f2], o3[f3] = v0[f0], v1[f1], v2[f2], v3[f3]
    a0 = _obv_run(c0, v0, o0, v0[f0], f0 + 1, t0)
    a1 = _obv_run(c1, v1, o1, v1[f1], f1 + 1, t0)
    a2 = _obv_run(c2, v2, o2, v2[f2], f2 + 1, t0)
    a3 = _obv_run(c3, v3, o3, v3[f3], f3 + 1, t0)
    y0, y1, y2, y3 = c0[t0:], c1[t0:], c2[t0:], c3[t0:]
    z0, z1, z2, z3 = c0[t0 - 1:], c1[t0 - 1:], c2[t0 - 1:], c3[t0 - 1:]
    w0, w1, w2, w3 = v0[t0:], v1[t0:], v2[t0:], v3[t0:]
    d0, d1, d2, d3 = o0[t0:], o1[t0:], o2[t0:], o3[t0:]
    for i in range(y0.shape[0]):
        a0 = _obv_step(a0, y0[i], z0[i], w0[i])
        a1 = _obv_step(a1, y1[i], z1[i], w1[i])
        a2 = _obv_step(a2, y2[i], z2[i], w2[i])
        a3 = _obv_step(a3, y3[i], z3[i], w3[i])
        d0[i] = a0
        d1[i] = a1
        d2[i] = a2
        d3[i] = a3


@_inline
def _obv_unit(order, grouped, first, u, close, volume, out):
    a, b, c, d = _unit_rows(order, grouped, u)
    _nan_heads(out, first, a, b, c, d)
    if d >= 0:
        _obv_lanes(close[a], close[b], close[c], close[d], volume[a], volume[b], volume[c],
                   volume[d], out[a], out[b], out[c], out[d], first[a], first[b], first[c], first[d])
    elif first[a] < close.shape[1]:
        f = first[a]
        out[a, f] = volume[a, f]
        _obv_run(close[a], volume[a], out[a], volume[a, f], f + 1, close.shape[1])


@_kernel
def _obv_2d(close, volume, out, work):
    rows, t = close.shape
    first = np.empty(rows, np.int64)
    for r in range(rows):
        first[r] = _start2(close[r], volume[r])
    order, grouped, units = _plan(first, t)
    u = _claim(work)
    while u < units:
        _obv_unit(order, grouped, first, u, close, volume, out)
        u = _next(work)
    return _all_done(work, units)


# --------------------------------------------------------------------------- extras

@_inline
def _volume_zscore_row(row, n, out, scratch):
    """Exact two-pass mean and population std of each window of the previous n volumes,
    summed in window order; the passes run over all windows at once (vectorised)."""
    t = row.shape[0]
    s = _start1(row)
    first = _first_output(s, n, t)
    _nan_head(out, first)
    m = t - first
    if m <= 0:
        return
    total, sq, hi, lo = scratch[0, :m], scratch[1, :m], scratch[2, :m], scratch[3, :m]
    total[:] = 0.0
    sq[:] = 0.0
    hi[:] = row[s:s + m]
    lo[:] = row[s:s + m]
    for j in range(n):  # window k is row[s + k : s + k + n]
        seg = row[s + j:s + j + m]
        for k in range(m):
            total[k] += seg[k]
    for k in range(m):
        total[k] = total[k] / n
    for j in range(n):
        seg = row[s + j:s + j + m]
        for k in range(m):
            d = seg[k] - total[k]
            sq[k] += d * d
            hi[k] = seg[k] if seg[k] > hi[k] else hi[k]
            lo[k] = seg[k] if seg[k] < lo[k] else lo[k]
    cur = row[first:]
    dst = out[first:]
    for k in range(m):
        z = (cur[k] - total[k]) / np.sqrt(sq[k] / n)
        # all n volumes equal: no scale, NaN (so "z > 3" stays False)
        dst[k] = _NAN if hi[k] == lo[k] else z


@_kernel
def _volume_zscore_2d(v, n, out, work):
    rows, t = v.shape
    scratch = np.empty((4, t))
    r = _claim(work)
    while r < rows:
        _volume_zscore_row(v[r], n, out[r], scratch)
        r = _next(work)
    return _all_done(work, rows)


@_kernel
def _ext(a, b, want_max):
    """max/min that returns NaN if either side is NaN (so a window with a NaN is NaN)."""
    if want_max:
        return a if (a > b) | (a != a) else b
    return a if (a < b) | (a != a) else b


@_kernel
def _window_extreme(x, s, n, lag, want_max, out, buf_a, buf_b):
    """out[i] = max/min of x[i-lag-n+1 .. i-lag] for a row starting at s; lag=0 includes
    the current value, lag=1 excludes it. Extremes of windows 1, 2, 4, ... come from
    pairs of the previous ones (log2 n vectorised passes), then two overlapping windows
    of the largest power of two <= n cover n."""
    t = x.shape[0]
    first = _first_output(s, n - 1 + lag, t)
    _nan_head(out, first)
    if first >= t:
        return
    m = t - s
    a = buf_a[:m]
    b = buf_b[:m]
    a[:] = x[s:]
    w = 1
    while 2 * w <= n:
        b[:w] = a[:w]
        hi, lo, dst = a[w:], a[:m - w], b[w:]
        for k in range(dst.shape[0]):
            dst[k] = _ext(hi[k], lo[k], want_max)
        a, b = b, a
        w *= 2
    # a[i] now covers x[s + i - w + 1 .. s + i]; window n ending at s + i: a[i] and a[i - (n - w)]
    hi = a[n - 1:m - lag]
    lo = a[w - 1:m - lag - (n - w)]
    dst = out[first:]
    for k in range(dst.shape[0]):
        dst[k] = _ext(hi[k], lo[k], want_max)


@_kernel
def _rolling_extreme_2d(x, n, lag, want_max, out, work):
    rows, t = x.shape
    buf = np.empty((2, t))
    r = _claim(work)
    while r < rows:
        _window_extreme(x[r], _start1(x[r]), n, lag, want_max, out[r], buf[0], buf[1])
        r = _next(work)
    return _all_done(work, rows)


@_inline
def _donchian_row(high, low, n, upper, lower, buf):
    s = _start2(high, low)
    _window_extreme(high, s, n, 1, True, upper, buf[0], buf[1])
    _window_extreme(low, s, n, 1, False, lower, buf[0], buf[1])


@_kernel
def _donchian_2d(high, low, n, upper, lower, work):
    rows, t = high.shape
    buf = np.empty((2, t))
    r = _claim(work)
    while r < rows:
        _donchian_row(high[r], low[r], n, upper[r], lower[r], buf)
        r = _next(work)
    return _all_done(work, rows)


# --------------------------------------------------------------------------- public API

def _rows(*arrays) -> tuple[list[np.ndarray], tuple[int, ...]]:
    """Inputs as C-contiguous float64 2-D arrays (one compiled signature each)."""
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
    return out, shape


def _outputs(out, count: int, shape: tuple[int, ...]) -> tuple[tuple[np.ndarray, ...], tuple]:
    """(2-D views to write into, arrays to return): fresh ones, or the caller's ``out``."""
    if out is None:  # one block for all outputs: fewer, larger allocations
        block = np.empty((count,) + shape)
        given = tuple(block[i] for i in range(count))
    else:
        given = out if isinstance(out, tuple) else (out,)
        if len(given) != count:
            raise ValueError(f"out must be {count} array(s), got {len(given)}")
        for a in given:
            if (not isinstance(a, np.ndarray) or a.dtype != np.float64 or a.shape != shape
                    or not (a.flags.c_contiguous and a.flags.writeable and a.flags.aligned)):
                raise ValueError(f"out arrays must be writable C-contiguous float64 of shape {shape}")
    views = tuple(a.reshape(1, -1) if len(shape) == 1 else a for a in given)
    return views, (given if count > 1 else given[0])


_pool_lock = threading.Lock()
_pool_of: dict[int, ThreadPoolExecutor] = {}  # by process id: a pool does not survive fork()


def _pool() -> ThreadPoolExecutor:
    pid = os.getpid()
    with _pool_lock:
        if pid not in _pool_of:
            _pool_of.clear()
            _pool_of[pid] = ThreadPoolExecutor(max_workers=max(THREADS - 1, 1),
                                               thread_name_prefix="pitrader-indicators")
        return _pool_of[pid]


def _spread(driver, *args) -> None:
    """Run a _2d driver on the calling thread and, for a large input, on THREADS - 1 pool
    threads too. All of them claim work units from one shared counter until none is left,
    so a pool thread that starts late (a busy machine) just finds less to do, and the call
    takes about the serial time at worst. The calling thread waits for the others only if
    one of them is still computing a unit."""
    work = np.zeros(2, np.int64)  # units handed out, units done
    first = args[0]
    helpers = THREADS - 1 if first.shape[0] > 1 and first.size >= PARALLEL_MIN_CELLS else 0
    if helpers <= 0:
        driver(*args, work)
        return
    pool = _pool()
    pending = [pool.submit(driver, *args, work) for _ in range(helpers)]
    if not driver(*args, work):
        for f in pending:
            f.result()


def _period(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value or not minimum <= int(value) <= 100_000:
        raise ValueError(f"{name} must be an integer in {minimum}..100000, got {value!r}")
    return int(value)


def sma(x, n=30, *, out=None):
    """Simple moving average (TA-Lib SMA)."""
    (a,), shape = _rows(x)
    (o,), result = _outputs(out, 1, shape)
    _spread(_sma_2d, a, _period(n, "n", 1), o)
    return result


def ema(x, n=30, *, out=None):
    """Exponential moving average seeded with the SMA of the first n values (TA-Lib EMA)."""
    (a,), shape = _rows(x)
    (o,), result = _outputs(out, 1, shape)
    _spread(_ema_2d, a, _period(n, "n", 1), o)
    return result


def rsi(x, n=14, *, out=None):
    """Wilder's relative strength index, 0..100 (TA-Lib RSI); a flat window gives 0."""
    (a,), shape = _rows(x)
    (o,), result = _outputs(out, 1, shape)
    _spread(_rsi_2d, a, _period(n, "n", 2), o)
    return result


def macd(x, fast=12, slow=26, signal=9, *, out=None):
    """(macd, signal, hist) as TA-Lib MACD (the fast EMA starts with the slow one)."""
    (a,), shape = _rows(x)
    fast = _period(fast, "fast", 2)
    slow = _period(slow, "slow", 2)
    if slow < fast:
        fast, slow = slow, fast
    signal = _period(signal, "signal", 1)
    views, result = _outputs(out, 3, shape)
    _spread(_macd_2d, a, fast, slow, signal, *views)
    return result


def bbands(x, n=20, nbdev_up=2.0, nbdev_dn=2.0, *, out=None):
    """(upper, middle, lower) Bollinger bands: SMA +- nbdev population stddevs (TA-Lib)."""
    (a,), shape = _rows(x)
    up, dn = float(nbdev_up), float(nbdev_dn)
    if not (np.isfinite(up) and np.isfinite(dn)):
        raise ValueError(f"nbdev_up/nbdev_dn must be finite, got {nbdev_up!r}, {nbdev_dn!r}")
    n = _period(n, "n", 2)
    views, result = _outputs(out, 3, shape)
    _spread(_bbands_2d, a, n, up, dn, *views)
    return result


def atr(high, low, close, n=14, *, out=None):
    """Wilder's average true range (TA-Lib ATR)."""
    (h, lo, c), shape = _rows(high, low, close)
    (o,), result = _outputs(out, 1, shape)
    _spread(_atr_2d, h, lo, c, _period(n, "n", 1), o)
    return result


def adx(high, low, close, n=14, *, out=None):
    """Wilder's average directional index (TA-Lib ADX), first value after 2n - 1 candles."""
    (h, lo, c), shape = _rows(high, low, close)
    (o,), result = _outputs(out, 1, shape)
    _spread(_adx_2d, h, lo, c, _period(n, "n", 2), o)
    return result


def stoch(high, low, close, fastk=5, slowk=3, slowd=3, *, out=None):
    """(slowk, slowd) slow stochastic with SMA smoothing (TA-Lib STOCH, MA type SMA)."""
    (h, lo, c), shape = _rows(high, low, close)
    args = (_period(fastk, "fastk", 1), _period(slowk, "slowk", 1), _period(slowd, "slowd", 1))
    views, result = _outputs(out, 2, shape)
    _spread(_stoch_2d, h, lo, c, *args, *views)
    return result


def roc(x, n=10, *, out=None):
    """Rate of change in percent, (x / x[-n] - 1) * 100; 0 where x[-n] is 0 (TA-Lib ROC)."""
    (a,), shape = _rows(x)
    (o,), result = _outputs(out, 1, shape)
    _spread(_roc_2d, a, _period(n, "n", 1), o)
    return result


def obv(close, volume, *, out=None):
    """On-balance volume, starting at the first candle's volume (TA-Lib OBV)."""
    (c, v), shape = _rows(close, volume)
    (o,), result = _outputs(out, 1, shape)
    _spread(_obv_2d, c, v, o)
    return result


def volume_zscore(volume, n=20, *, out=None):
    """(v - mean) / std of the previous n candles' volumes, the current candle excluded
    (so a spike does not dilute its own baseline); population std.

    NaN for the first n candles of a row and where the previous n volumes are all equal
    (no scale), so a comparison like ``z > 3`` is simply False there.
    """
    (v,), shape = _rows(volume)
    (o,), result = _outputs(out, 1, shape)
    _spread(_volume_zscore_2d, v, _period(n, "n", 2), o)
    return result


def donchian(high, low, n=20, *, out=None):
    """(upper, lower): highest high / lowest low of the previous n candles, current
    excluded, so ``close > upper`` is a breakout."""
    (h, lo), shape = _rows(high, low)
    views, result = _outputs(out, 2, shape)
    _spread(_donchian_2d, h, lo, _period(n, "n", 1), *views)
    return result


def highest(x, n, *, out=None):
    """Highest value of the last n candles, current one included (TA-Lib MAX values)."""
    (a,), shape = _rows(x)
    (o,), result = _outputs(out, 1, shape)
    _spread(_rolling_extreme_2d, a, _period(n, "n", 1), 0, True, o)
    return result


def lowest(x, n, *, out=None):
    """Lowest value of the last n candles, current one included (TA-Lib MIN values)."""
    (a,), shape = _rows(x)
    (o,), result = _outputs(out, 1, shape)
    _spread(_rolling_extreme_2d, a, _period(n, "n", 1), 0, False, o)
    return result


_WARMUP_CALLS: tuple[tuple[str, Callable], ...] = (
    ("sma", lambda h, l, c, v: sma(c, 3)),
    ("ema", lambda h, l, c, v: ema(c, 3)),
    ("rsi", lambda h, l, c, v: rsi(c, 3)),
    ("macd", lambda h, l, c, v: macd(c, 2, 3, 2)),
    ("bbands", lambda h, l, c, v: bbands(c, 3)),
    ("atr", lambda h, l, c, v: (atr(h, l, c, 3), atr(h, l, c, 1))),
    ("adx", lambda h, l, c, v: adx(h, l, c, 2)),
    ("stoch", lambda h, l, c, v: stoch(h, l, c, 2, 2, 2)),
    ("roc", lambda h, l, c, v: roc(c, 2)),
    ("obv", lambda h, l, c, v: obv(c, v)),
    ("volume_zscore", lambda h, l, c, v: volume_zscore(v, 2)),
    ("donchian", lambda h, l, c, v: donchian(h, l, 2)),
    ("highest/lowest", lambda h, l, c, v: (highest(h, 2), lowest(l, 2))),
)

INDICATORS: tuple[str, ...] = tuple(name for name, _ in _WARMUP_CALLS)


def warmup(progress: Callable[[str], None] | None = None) -> int:
    """Compile (or load from NUMBA_CACHE_DIR) every kernel by calling each indicator on
    tiny 1-D and 2-D inputs; ``progress(name)`` is called after each. Returns the count."""
    rng = np.random.default_rng(0)
    close = 100.0 + rng.standard_normal((6, 16)).cumsum(axis=1)  # 6 rows: lanes and singles
    close[1, :3] = np.nan
    high = close + 0.5
    low = close - 0.5
    volume = rng.uniform(1.0, 10.0, (6, 16))
    for name, call in _WARMUP_CALLS:
        call(high, low, close, volume)
        call(high[0], low[0], close[0], volume[0])
        if progress is not None:
            progress(name)
    return len(_WARMUP_CALLS)
