"""core.indicators against TA-Lib (the oracle) on all 126 real 1h pairs, plus properties.

Tolerance: the kernels repeat TA-Lib's operations in TA-Lib's order (including its fused
multiply-adds), so on this build the values are bit-identical. The comparison still
allows rtol 1e-9 plus atol 1e-9 x the largest |value| of the row: that leaves room for a
TA-Lib built without FMA or with reordered sums (a few ulp, which cancellation can lift
near zero, e.g. MACD histogram crossings, but never beyond the row's magnitude x 1e-9),
while a seeding, smoothing or lookback mistake shows up orders of magnitude above it.
NaN positions must match exactly.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import multiprocessing
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import indicators as ind

talib = pytest.importorskip("talib")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ohlcv" / "1h"
FIELDS = ("open", "high", "low", "close", "volume")
PROPS = settings(max_examples=60, deadline=None)


@functools.cache
def real_1h() -> dict[str, np.ndarray]:
    """All pairs as pairs x time matrices, left-padded with NaN to the longest history."""
    files = sorted(DATA.glob("*.csv"))
    assert len(files) == 126, f"expected 126 pairs in {DATA}, found {len(files)}"
    rows = [np.loadtxt(f, delimiter=",", skiprows=1, ndmin=2) for f in files]
    width = max(len(r) for r in rows)
    mats = {k: np.full((len(rows), width), np.nan) for k in FIELDS}
    for i, r in enumerate(rows):
        for j, k in enumerate(FIELDS, start=1):
            mats[k][i, width - len(r):] = r[:, j]
    for m in mats.values():
        m.flags.writeable = False
    return mats


def as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def assert_talib_equal(got: np.ndarray, ref: np.ndarray, what: str = "") -> None:
    nan_ref = np.isnan(ref)
    bad = np.flatnonzero(np.isnan(got) != nan_ref)
    assert bad.size == 0, f"{what}: NaN mismatch at {bad[:5]} (got {got[bad[:5]]}, ref {ref[bad[:5]]})"
    if (~nan_ref).any():
        scale = max(float(np.max(np.abs(ref[~nan_ref]))), 1.0)
        np.testing.assert_allclose(got[~nan_ref], ref[~nan_ref], rtol=1e-9, atol=1e-9 * scale,
                                   err_msg=what)


def first_complete(*cols: np.ndarray) -> int:
    ok = np.logical_and.reduce([~np.isnan(c) for c in cols])
    return int(np.argmax(ok)) if ok.any() else len(ok)


# name -> (ours(h, l, c, v), talib(h, l, c, v), inputs used)
SPECS = {
    "sma": (lambda h, l, c, v: ind.sma(c, 30), lambda h, l, c, v: talib.SMA(c), "c"),
    "sma_5": (lambda h, l, c, v: ind.sma(c, 5), lambda h, l, c, v: talib.SMA(c, 5), "c"),
    "ema": (lambda h, l, c, v: ind.ema(c, 30), lambda h, l, c, v: talib.EMA(c), "c"),
    "ema_50": (lambda h, l, c, v: ind.ema(c, 50), lambda h, l, c, v: talib.EMA(c, 50), "c"),
    "ema_1": (lambda h, l, c, v: ind.ema(c, 1), lambda h, l, c, v: talib.EMA(c, 1), "c"),
    "rsi": (lambda h, l, c, v: ind.rsi(c), lambda h, l, c, v: talib.RSI(c), "c"),
    "rsi_7": (lambda h, l, c, v: ind.rsi(c, 7), lambda h, l, c, v: talib.RSI(c, 7), "c"),
    "macd": (lambda h, l, c, v: ind.macd(c), lambda h, l, c, v: talib.MACD(c), "c"),
    "macd_5_35_5": (lambda h, l, c, v: ind.macd(c, 5, 35, 5), lambda h, l, c, v: talib.MACD(c, 5, 35, 5), "c"),
    "macd_swapped_sig1": (lambda h, l, c, v: ind.macd(c, 26, 12, 1),
                          lambda h, l, c, v: talib.MACD(c, 26, 12, 1), "c"),
    "bbands": (lambda h, l, c, v: ind.bbands(c), lambda h, l, c, v: talib.BBANDS(c), "c"),
    "bbands_10_1.5_2.5": (lambda h, l, c, v: ind.bbands(c, 10, 1.5, 2.5),
                          lambda h, l, c, v: talib.BBANDS(c, 10, 1.5, 2.5), "c"),
    "atr": (lambda h, l, c, v: ind.atr(h, l, c), lambda h, l, c, v: talib.ATR(h, l, c), "hlc"),
    "atr_1": (lambda h, l, c, v: ind.atr(h, l, c, 1), lambda h, l, c, v: talib.ATR(h, l, c, 1), "hlc"),
    "atr_30": (lambda h, l, c, v: ind.atr(h, l, c, 30), lambda h, l, c, v: talib.ATR(h, l, c, 30), "hlc"),
    "adx": (lambda h, l, c, v: ind.adx(h, l, c), lambda h, l, c, v: talib.ADX(h, l, c), "hlc"),
    "adx_5": (lambda h, l, c, v: ind.adx(h, l, c, 5), lambda h, l, c, v: talib.ADX(h, l, c, 5), "hlc"),
    "stoch": (lambda h, l, c, v: ind.stoch(h, l, c), lambda h, l, c, v: talib.STOCH(h, l, c), "hlc"),
    "stoch_14_1_1": (lambda h, l, c, v: ind.stoch(h, l, c, 14, 1, 1),
                     lambda h, l, c, v: talib.STOCH(h, l, c, 14, 1, 0, 1, 0), "hlc"),
    "stoch_21_5_4": (lambda h, l, c, v: ind.stoch(h, l, c, 21, 5, 4),  # > 16: tracked extremes
                     lambda h, l, c, v: talib.STOCH(h, l, c, 21, 5, 0, 4, 0), "hlc"),
    "roc": (lambda h, l, c, v: ind.roc(c), lambda h, l, c, v: talib.ROC(c), "c"),
    "roc_1": (lambda h, l, c, v: ind.roc(c, 1), lambda h, l, c, v: talib.ROC(c, 1), "c"),
    "obv": (lambda h, l, c, v: ind.obv(c, v), lambda h, l, c, v: talib.OBV(c, v), "cv"),
    "highest_20": (lambda h, l, c, v: ind.highest(h, 20), lambda h, l, c, v: talib.MAX(h, 20), "h"),
    "lowest_20": (lambda h, l, c, v: ind.lowest(l, 20), lambda h, l, c, v: talib.MIN(l, 20), "l"),
}


def columns(spec_inputs: str, h, l, c, v) -> list[np.ndarray]:
    return [{"h": h, "l": l, "c": c, "v": v}[k] for k in spec_inputs]


@pytest.mark.parametrize("name", list(SPECS))
def test_every_real_pair_matches_talib_on_its_history(name):
    """2-D call over all pairs (NaN-padded): each row is TA-Lib on its non-NaN suffix,
    NaN before it; the 1-D call on the same row gives the same array."""
    ours, ref, inputs = SPECS[name]
    m = real_1h()
    h, l, c, v = m["high"], m["low"], m["close"], m["volume"]
    batch = as_tuple(ours(h, l, c, v))
    assert all(b.shape == c.shape for b in batch)
    for r in range(c.shape[0]):
        s = first_complete(*columns(inputs, h[r], l[r], c[r], v[r]))
        expected = as_tuple(ref(h[r, s:], l[r, s:], c[r, s:], v[r, s:]))
        single = as_tuple(ours(h[r], l[r], c[r], v[r]))
        for k, (got, exp, one) in enumerate(zip(batch, expected, single)):
            assert np.isnan(got[r, :s]).all(), f"{name} row {r}: values before the history starts"
            assert_talib_equal(got[r, s:], exp, f"{name} row {r} output {k}")
            assert np.array_equal(one, got[r], equal_nan=True), f"{name} row {r}: 1-D != 2-D"


def test_real_data_has_the_shapes_these_tests_rely_on():
    m = real_1h()
    starts = [first_complete(m["close"][r]) for r in range(m["close"].shape[0])]
    assert min(starts) == 0 and max(starts) > 4000  # full and short histories side by side
    ts = np.loadtxt(DATA / "BTC_USDT.csv", delimiter=",", skiprows=1, usecols=0)
    assert (np.diff(ts) > 3_600_000).any()  # real gaps (missing candles) are in the data


def test_volume_zscore_matches_numpy_on_real_pairs():
    v = real_1h()["volume"][:4]
    z = ind.volume_zscore(v, 20)
    for r in range(v.shape[0]):
        assert_zscore_equal(z[r], v[r], 20)


def test_donchian_is_the_previous_n_candles_extremes_on_real_pairs():
    m = real_1h()
    h, l, c = m["high"][:20], m["low"][:20], m["close"][:20]
    upper, lower = ind.donchian(h, l, 20)
    for r in range(h.shape[0]):
        s = first_complete(h[r], l[r])
        ref_up = np.concatenate([[np.nan], talib.MAX(h[r, s:], 20)[:-1]])
        ref_lo = np.concatenate([[np.nan], talib.MIN(l[r, s:], 20)[:-1]])
        assert_talib_equal(upper[r, s:], ref_up, f"donchian upper row {r}")
        assert_talib_equal(lower[r, s:], ref_lo, f"donchian lower row {r}")
    breakout = c > upper  # the current candle is excluded, so a breakout is detectable
    assert breakout.sum() > 100


# --------------------------------------------------------------------------- properties

STEPS = (-0.05, -0.01, 0.0, 0.0, 0.0, 0.003, 0.01, 0.04)  # zeros: flat stretches


@st.composite
def series(draw, max_len=70):
    """(high, low, close, volume) of one pair, prices from 1e-6 to 5e4, NaN-padded."""
    n = draw(st.integers(0, max_len))
    base = draw(st.sampled_from([1e-6, 0.013, 1.0, 250.0, 50_000.0]))
    close = base * np.exp(np.cumsum(draw(st.lists(st.sampled_from(STEPS), min_size=n, max_size=n))))
    spread = st.lists(st.sampled_from([0.0, 0.0, 0.001, 0.02]), min_size=n, max_size=n)
    high = close * (1 + np.array(draw(spread)))
    low = close * (1 - np.array(draw(spread)))
    volume = np.array(draw(st.lists(st.sampled_from([0.0, 0.0, 1.0, 3.5, 1e6]), min_size=n, max_size=n)))
    pad = np.full(draw(st.integers(0, 4)), np.nan)
    return tuple(np.concatenate([pad, x]) for x in (high, low, close, volume))


# name -> (ours(h, l, c, v, p), talib(h, l, c, v, p), strategy for p, inputs used)
PERIOD = st.integers(1, 30)
PROPERTY_SPECS = {
    "sma": (lambda h, l, c, v, p: ind.sma(c, p), lambda h, l, c, v, p: talib.SMA(c, p), PERIOD, "c"),
    "ema": (lambda h, l, c, v, p: ind.ema(c, p), lambda h, l, c, v, p: talib.EMA(c, p), PERIOD, "c"),
    "rsi": (lambda h, l, c, v, p: ind.rsi(c, p), lambda h, l, c, v, p: talib.RSI(c, p), st.integers(2, 30), "c"),
    "macd": (lambda h, l, c, v, p: ind.macd(c, *p), lambda h, l, c, v, p: talib.MACD(c, *p),
             st.tuples(st.integers(2, 15), st.integers(2, 30), st.integers(1, 9)), "c"),
    "bbands": (lambda h, l, c, v, p: ind.bbands(c, *p), lambda h, l, c, v, p: talib.BBANDS(c, *p),
               st.tuples(st.integers(2, 30), st.sampled_from([1.0, 2.0]), st.sampled_from([2.0, 0.5])), "c"),
    "atr": (lambda h, l, c, v, p: ind.atr(h, l, c, p), lambda h, l, c, v, p: talib.ATR(h, l, c, p), PERIOD, "hlc"),
    "adx": (lambda h, l, c, v, p: ind.adx(h, l, c, p), lambda h, l, c, v, p: talib.ADX(h, l, c, p),
            st.integers(2, 20), "hlc"),
    "stoch": (lambda h, l, c, v, p: ind.stoch(h, l, c, *p),
              lambda h, l, c, v, p: talib.STOCH(h, l, c, p[0], p[1], 0, p[2], 0),
              st.tuples(st.integers(1, 20), st.integers(1, 4), st.integers(1, 4)), "hlc"),
    "roc": (lambda h, l, c, v, p: ind.roc(c, p), lambda h, l, c, v, p: talib.ROC(c, p), PERIOD, "c"),
    "obv": (lambda h, l, c, v, p: ind.obv(c, v), lambda h, l, c, v, p: talib.OBV(c, v), st.none(), "cv"),
}


@pytest.mark.parametrize("name", list(PROPERTY_SPECS))
@PROPS
@given(data=st.data())
def test_matches_talib_on_short_flat_and_padded_series(name, data):
    """Constant stretches, zero volume, periods longer than the series, very short rows."""
    ours, ref, params, inputs = PROPERTY_SPECS[name]
    h, l, c, v = data.draw(series())
    p = data.draw(params)
    got = as_tuple(ours(h, l, c, v, p))
    s = first_complete(*columns(inputs, h, l, c, v))
    expected = as_tuple(ref(h[s:], l[s:], c[s:], v[s:], p)) if s < len(c) else None
    for k, g in enumerate(got):
        assert g.shape == c.shape
        assert np.isnan(g[:s]).all()
        if expected is not None:
            assert_talib_equal(g[s:], expected[k], f"{name} {p} output {k}")


@pytest.mark.parametrize("name", list(PROPERTY_SPECS))
@PROPS
@given(data=st.data())
def test_nan_inside_a_series_propagates_as_in_talib(name, data):
    ours, ref, params, inputs = PROPERTY_SPECS[name]
    h, l, c, v = (x.copy() for x in data.draw(series(max_len=60)))
    for x in (h, l, c, v):
        if len(x):
            x[data.draw(st.lists(st.integers(0, len(x) - 1), max_size=2))] = np.nan
    s = first_complete(*columns(inputs, h, l, c, v))
    if s == len(c):
        return  # no candle with all inputs: ours is all NaN (see test below)
    p = data.draw(params)
    for k, (g, e) in enumerate(zip(as_tuple(ours(h, l, c, v, p)), as_tuple(ref(h, l, c, v, p)))):
        assert_talib_equal(g, e, f"{name} {p} output {k}")


# every kernel with short periods: lanes, leftover rows and lookbacks all show up in small rows
ALL_CALLS = [
    lambda h, l, c, v: ind.sma(c, 3), lambda h, l, c, v: ind.ema(c, 4),
    lambda h, l, c, v: ind.rsi(c, 5), lambda h, l, c, v: ind.macd(c, 3, 6, 2),
    lambda h, l, c, v: ind.bbands(c, 4, 2.0, 1.0), lambda h, l, c, v: ind.atr(h, l, c, 3),
    lambda h, l, c, v: ind.adx(h, l, c, 3), lambda h, l, c, v: ind.stoch(h, l, c, 3, 2, 2),
    lambda h, l, c, v: ind.roc(c, 2), lambda h, l, c, v: ind.obv(c, v),
    lambda h, l, c, v: ind.volume_zscore(v, 3), lambda h, l, c, v: ind.donchian(h, l, 3),
    lambda h, l, c, v: ind.highest(h, 3), lambda h, l, c, v: ind.lowest(l, 3),
]


@contextlib.contextmanager
def spread_over(threads: int, min_cells: int = 0):
    """Calls with at least min_cells cells use `threads` threads (0: every 2-D call)."""
    saved = ind.THREADS, ind.PARALLEL_MIN_CELLS
    ind.THREADS, ind.PARALLEL_MIN_CELLS = threads, min_cells
    try:
        yield
    finally:
        ind.THREADS, ind.PARALLEL_MIN_CELLS = saved


@PROPS
@given(data=st.data(), rows=st.integers(1, 11), threads=st.sampled_from([1, 2, 3, 5]))
def test_2d_rows_equal_1d_calls(data, rows, threads):
    """Rows of different history lengths (lanes, alignment, leftover rows) in one matrix,
    spread over 1-5 threads: each row equals the 1-D call on it, bit for bit."""
    drawn = [data.draw(series(max_len=80)) for _ in range(rows)]
    width = max(len(d[0]) for d in drawn)
    mats = [np.full((rows, width), np.nan) for _ in range(4)]
    for r, d in enumerate(drawn):
        for m, x in zip(mats, d):
            m[r, width - len(x):] = x
    h, l, c, v = mats
    for call in ALL_CALLS:
        with spread_over(threads):
            batch = as_tuple(call(h, l, c, v))
        for r in range(rows):
            for b, one in zip(batch, as_tuple(call(h[r], l[r], c[r], v[r]))):
                assert np.array_equal(b[r], one, equal_nan=True)


def real_calls(threads: int) -> list[tuple[np.ndarray, ...]]:
    m = real_1h()
    with spread_over(threads):
        return [as_tuple(call(m["high"], m["low"], m["close"], m["volume"])) for call in ALL_CALLS]


def assert_same_outputs(got, expected):
    for k, (g, e) in enumerate(zip(got, expected)):
        assert len(g) == len(e)
        for a, b in zip(g, e):
            assert np.array_equal(a, b, equal_nan=True), f"call {k} differs"


def test_real_pairs_are_identical_on_any_thread_count():
    serial = real_calls(1)
    for threads in (2, 4):
        assert_same_outputs(real_calls(threads), serial)
    assert any(t.name.startswith("pitrader-indicators") for t in threading.enumerate())


class _NotStarted(concurrent.futures.Future):
    def result(self, timeout=None):
        raise AssertionError("waited for a pool thread that had not started")


class _LatePool:
    """A pool whose threads start only when the test says so (a busy machine)."""

    def __init__(self):
        self.tasks = []

    def submit(self, fn, *args):
        self.tasks.append((fn, args))
        return _NotStarted()

    def start_all(self):
        for fn, args in self.tasks:
            fn(*args)


class _EagerPool:
    """A pool whose threads run each task to the end before the calling thread starts."""

    def submit(self, fn, *args):
        f = concurrent.futures.Future()
        f.set_result(fn(*args))
        return f


def test_calling_thread_computes_everything_when_pool_threads_start_late(monkeypatch):
    serial = real_calls(1)
    late = _LatePool()
    monkeypatch.setattr(ind, "_pool", lambda: late)
    got = real_calls(3)  # returns without waiting for the pool: all units were its own
    assert_same_outputs(got, serial)
    assert len(late.tasks) == 2 * len(ALL_CALLS)
    late.start_all()  # the late threads find no unit left and write nothing
    assert_same_outputs(got, serial)


def test_calling_thread_finds_nothing_left_when_pool_threads_took_all(monkeypatch):
    monkeypatch.setattr(ind, "_pool", lambda: _EagerPool())
    assert_same_outputs(real_calls(2), real_calls(1))


def test_scanner_sized_and_single_thread_calls_touch_no_pool(monkeypatch):
    def no_pool():
        raise AssertionError("the pool was used")

    monkeypatch.setattr(ind, "_pool", no_pool)
    m = real_1h()
    small = [np.ascontiguousarray(np.concatenate([m[k]] * 2)[:150, -500:]) for k in ("high", "low", "close", "volume")]
    assert small[0].size < ind.PARALLEL_MIN_CELLS
    for call in ALL_CALLS:
        call(*small)  # default threshold: the scanner's ~150 x 500 stays on this thread
    with spread_over(1):
        for call in ALL_CALLS:
            call(m["high"], m["low"], m["close"], m["volume"])


def test_calls_from_several_threads_at_once_are_independent():
    serial = real_calls(1)
    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        results = list(ex.map(lambda _: real_calls(2), range(3)))
    for got in results:
        assert_same_outputs(got, serial)


def _child_after_fork(queue):
    m = real_1h()
    with spread_over(2):
        got = ind.adx(m["high"], m["low"], m["close"], 5)
    queue.put((got.tobytes(), any(t.name.startswith("pitrader-indicators") for t in threading.enumerate())))


def test_a_forked_child_makes_its_own_pool():
    m = real_1h()
    with spread_over(2):
        expected = ind.adx(m["high"], m["low"], m["close"], 5)  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_after_fork, args=(queue,))
    child.start()
    got, pooled = queue.get(timeout=120)
    child.join(30)
    assert child.exitcode == 0
    assert got == expected.tobytes() and pooled


@pytest.mark.parametrize("price", [1e-7, 0.5, 42_000.0])
def test_constant_prices_give_talibs_flat_values(price):
    c = np.full(80, price)
    h, l, v = c.copy(), c.copy(), np.full(80, 7.0)
    assert_talib_equal(ind.rsi(c), talib.RSI(c))
    assert (ind.rsi(c)[14:] == 0.0).all()  # TA-Lib's convention for no movement
    assert_talib_equal(ind.adx(h, l, c), talib.ADX(h, l, c))
    assert (ind.adx(h, l, c)[27:] == 0.0).all()
    for got, ref in zip(ind.stoch(h, l, c), talib.STOCH(h, l, c)):
        assert_talib_equal(got, ref)
        assert (got[8:] == 0.0).all()  # zero range: TA-Lib writes 0
    upper, middle, lower = ind.bbands(c)
    assert (upper[19:] == middle[19:]).all() and (lower[19:] == middle[19:]).all()  # stddev exactly 0
    np.testing.assert_allclose(middle[19:], price, rtol=1e-12)
    assert (ind.atr(h, l, c)[14:] == 0.0).all()
    assert np.isnan(ind.volume_zscore(v)).all()  # flat volume: no scale


@pytest.mark.parametrize("length", [0, 1, 2, 5])
def test_period_longer_than_series_is_all_nan(length):
    x = np.linspace(1.0, 2.0, length)
    for out in (ind.sma(x, 10), ind.ema(x, 10), ind.rsi(x, 10), *ind.macd(x), *ind.bbands(x, 10),
                ind.atr(x, x, x, 10), ind.adx(x, x, x, 10), *ind.stoch(x, x, x, 10), ind.roc(x, 10),
                ind.volume_zscore(x, 10), *ind.donchian(x, x, 10), ind.highest(x, 10), ind.lowest(x, 10)):
        assert out.shape == (length,) and np.isnan(out).all()
    assert ind.sma(np.empty((0, 7)), 3).shape == (0, 7)
    assert ind.macd(np.empty((3, 0)))[0].shape == (3, 0)


def test_row_without_complete_candle_is_all_nan():
    c = np.array([np.nan, 1.0, np.nan, 2.0])
    v = np.array([1.0, np.nan, 1.0, np.nan])
    assert np.isnan(ind.obv(c, v)).all()
    assert np.isnan(ind.sma(np.full(5, np.nan), 2)).all()


def test_zero_volume():
    c = np.array([1.0, 2.0, 1.5, 1.5, 3.0, 2.0])
    v = np.zeros(6)
    assert (ind.obv(c, v) == 0.0).all()
    assert np.isnan(ind.volume_zscore(v, 3)).all()
    v2 = np.array([0.0, 0.0, 0.0, 5.0, 0.0, 0.0])
    z = ind.volume_zscore(v2, 3)
    assert np.isnan(z[:4]).all()  # first 3: no history; candle 3: previous 3 all zero
    assert z[4] == pytest.approx((0.0 - 5 / 3) / np.std([0.0, 0.0, 5.0]))


@PROPS
@given(h_l_c_v=series(max_len=60), n=st.integers(2, 12))
def test_volume_zscore_is_the_previous_windows_zscore(h_l_c_v, n):
    v = h_l_c_v[3]
    assert_zscore_equal(ind.volume_zscore(v, n), v, n)


@PROPS
@given(h_l_c_v=series(max_len=60), n=st.integers(1, 12), holes=st.lists(st.integers(0, 63), max_size=2))
def test_highest_lowest_donchian_are_window_extremes(h_l_c_v, n, holes):
    h, l = h_l_c_v[0].copy(), h_l_c_v[1].copy()
    for i in holes:
        if i < len(h):
            h[i] = np.nan  # a NaN inside the window makes the window NaN
    s = first_complete(h, l)  # a multi-input row starts where all inputs are present
    s_h = first_complete(h)
    up, lo = ind.donchian(h, l, n)
    hi_now = ind.highest(h, n)
    for t in range(len(h)):
        prev = h[t - n:t] if t - n >= s else None
        cur = h[t - n + 1:t + 1] if t - n + 1 >= s_h else None
        assert np.array_equal(up[t], np.max(prev) if prev is not None else np.nan, equal_nan=True)
        assert np.array_equal(hi_now[t], np.max(cur) if cur is not None else np.nan, equal_nan=True)
        prev_l = l[t - n:t] if t - n >= s else None
        assert np.array_equal(lo[t], np.min(prev_l) if prev_l is not None else np.nan, equal_nan=True)


def assert_zscore_equal(got: np.ndarray, v: np.ndarray, n: int) -> None:
    s = first_complete(v)
    for t in range(len(v)):
        if t < s + n:
            assert np.isnan(got[t])
            continue
        w = v[t - n:t]
        if np.isnan(w).any() or np.isnan(v[t]) or w.max() == w.min():
            assert np.isnan(got[t]), (t, w, got[t])
            continue
        mean, sd = w.mean(), w.std()
        # a few ulp in the mean move z by about eps * |mean| / sd
        assert got[t] == pytest.approx((v[t] - mean) / sd, rel=1e-9, abs=1e-9 * (1 + abs(mean) / sd))


@settings(max_examples=300, deadline=None)
@given(a=st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300),
       n=st.integers(1, 100_000))
def test_division_without_divide_is_correctly_rounded(a, n):
    """The ADX recurrences replace x / n by a multiply and an fma correction."""
    if a != 0.0 and abs(a) < 1e-290:
        a = 0.0  # the correction step needs normal numbers; prices and ranges are far above
    assert ind._div_n(a, float(n), 1.0 / n) == a / n


# --------------------------------------------------------------------------- API

def test_out_buffers_are_filled_and_returned():
    m = real_1h()
    h, l, c = (np.ascontiguousarray(m[k][:9]) for k in ("high", "low", "close"))
    buf = np.zeros_like(c)
    assert ind.adx(h, l, c, out=buf) is buf
    assert np.array_equal(buf, ind.adx(h, l, c), equal_nan=True)
    bands = tuple(np.zeros_like(c) for _ in range(3))
    got = ind.bbands(c, out=bands)
    assert all(g is b for g, b in zip(got, bands))
    assert all(np.array_equal(g, e, equal_nan=True) for g, e in zip(got, ind.bbands(c)))
    row = np.empty(c.shape[1])
    assert np.array_equal(ind.ema(c[3], 20, out=row), ind.ema(c, 20)[3], equal_nan=True)
    with pytest.raises(ValueError, match="out arrays"):
        ind.sma(c, 5, out=np.zeros((9, 3)))
    with pytest.raises(ValueError, match="out arrays"):
        ind.sma(c, 5, out=np.zeros(c.shape, dtype=np.float32))
    with pytest.raises(ValueError, match="3 array"):
        ind.macd(c, out=(buf,))


def test_inputs_are_not_modified_and_non_contiguous_views_work():
    c = real_1h()["close"][:6, ::2]  # read-only, strided
    assert np.array_equal(ind.rsi(c), ind.rsi(np.ascontiguousarray(c)), equal_nan=True)
    assert ind.sma([1.0, 2.0, 3.0], 2)[2] == 2.5


@pytest.mark.parametrize("call", [
    lambda: ind.sma(np.ones(5), 0), lambda: ind.ema(np.ones(5), True), lambda: ind.rsi(np.ones(5), 1),
    lambda: ind.roc(np.ones(5), 2.5), lambda: ind.macd(np.ones(5), 1, 26, 9),
    lambda: ind.bbands(np.ones(5), 20, float("inf")), lambda: ind.adx(np.ones(5), np.ones(5), np.ones(5), 1),
    lambda: ind.atr(np.ones(5), np.ones(5), np.ones(4)), lambda: ind.sma(np.ones((2, 2, 2)), 2),
    lambda: ind.stoch(np.ones(5), np.ones(5), np.ones(5), 5, 0, 3),
])
def test_bad_arguments_are_refused_with_a_clear_error(call):
    with pytest.raises(ValueError):
        call()


def test_warmup_compiles_every_indicator_and_reports_progress():
    seen = []
    assert ind.warmup(seen.append) == len(ind.INDICATORS)
    assert seen == list(ind.INDICATORS)
    assert {"sma", "ema", "rsi", "macd", "bbands", "atr", "adx", "stoch", "roc", "obv"} <= set(seen)
