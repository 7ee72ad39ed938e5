"""Candle store on the real 1h data: incremental == bulk, fixed buffers, 4h aggregation."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.scan.candles import FIELDS, CandleStore
from core.timeframes import TIMEFRAME_MS
from tests.support.ohlcv import HOUR, candles, symbols

FOUR_H = TIMEFRAME_MS["4h"]
# pairs with real gaps (COCOS, BTCST: 97 h), short histories and ordinary ones
PAIRS = ["COCOS/USDT", "BTCST/USDT", "BTC/USDT", "MASK/USDT", "DOGE/USDT", "SAND/USDT"]


def reference_aggregate(rows: np.ndarray, period: int, sub: int) -> np.ndarray:
    """Straightforward bucket-by-bucket aggregation: the rule the store documents."""
    groups: dict[int, list[np.ndarray]] = {}
    for r in rows:
        groups.setdefault(int(r[0]) - int(r[0]) % period, []).append(r)
    keys = sorted(groups)
    out = []
    for n, key in enumerate(keys):
        g = groups[key]
        if n == 0 and int(g[0][0]) != key:
            continue  # history starts inside the bucket
        if n == len(keys) - 1 and int(g[-1][0]) != key + period - sub:
            continue  # still open
        out.append([key, g[0][1], max(x[2] for x in g), min(x[3] for x in g), g[-1][4], sum(x[5] for x in g)])
    return np.array(out, dtype=np.float64).reshape(-1, 6)


def held(store: CandleStore, tf: str, symbol: str) -> np.ndarray:
    """One row's held candles as (n, 6), oldest first."""
    v = store.view(tf)
    i = v.symbols.index(symbol)
    n = int(v.counts[i])
    return np.column_stack([getattr(v, f)[i, v.capacity - n:] for f in FIELDS])


def assert_same_store(a: CandleStore, b: CandleStore) -> None:
    for tf in a.timeframes:
        va, vb = a.view(tf), b.view(tf)
        assert va.symbols == vb.symbols
        np.testing.assert_array_equal(va.counts, vb.counts)
        for f in FIELDS:
            np.testing.assert_array_equal(getattr(va, f), getattr(vb, f), err_msg=f"{tf} {f}")


def test_4h_aggregation_matches_reference_on_all_real_pairs():
    pairs = symbols()
    store = CandleStore(["1h", "4h"], 6000)
    store.set_symbols(pairs)
    for sym in pairs:
        store.append(sym, "1h", candles(sym))
    checked = 0
    for sym in pairs:
        expected = reference_aggregate(candles(sym), FOUR_H, HOUR)
        got = held(store, "4h", sym)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0, err_msg=sym)
        np.testing.assert_array_equal(held(store, "1h", sym), candles(sym))
        checked += len(expected)
    assert checked > 126 * 1000
    # buckets aligned to 00:00/04:00/... UTC, and the 97 h COCOS outage is a gap in 4h as well
    v = store.view("4h")
    assert np.all(np.nan_to_num(v.ts, nan=0) % FOUR_H == 0)
    cocos = held(store, "4h", "COCOS/USDT")[:, 0]
    assert np.diff(cocos).max() / FOUR_H > 20


def test_4h_bucket_with_missing_hours_is_built_from_the_hours_that_exist():
    # a real bucket with an hour missing inside (exchange outage): built from the others, not dropped
    for sym in symbols():
        rows = candles(sym)
        buckets, first, sizes = np.unique(rows[:, 0] - rows[:, 0] % FOUR_H, return_index=True, return_counts=True)
        partial = np.flatnonzero(sizes[1:-1] < 4) + 1
        if len(partial):
            k = int(partial[0])
            break
    else:
        pytest.fail("no 1h gap inside a 4h bucket in the real data")
    bucket = buckets[k]
    members = rows[first[k]:first[k] + sizes[k]]
    store = CandleStore(["1h", "4h"], 6000)
    store.set_symbols([sym])
    store.append(sym, "1h", rows)
    got = held(store, "4h", sym)
    row = got[got[:, 0] == bucket]
    assert len(row) == 1
    np.testing.assert_array_equal(row[0], [bucket, members[0, 1], members[:, 2].max(), members[:, 3].min(),
                                           members[-1, 4], members[:, 5].sum()])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(1, 5500), max_size=30), singles=st.tuples(st.integers(0, 5400), st.integers(0, 300)),
       capacity=st.sampled_from([60, 500, 6000]))
def test_incremental_append_equals_bulk_load(cuts, singles, capacity):
    """Any chunking (blocks, a run of single candles, overlapping re-sends) gives the bulk result."""
    start, count = singles
    bounds = sorted({0, *cuts, *range(start, start + count)})
    bulk = CandleStore(["1h", "4h"], capacity)
    inc = CandleStore(["1h", "4h"], capacity)
    bulk.set_symbols(PAIRS)
    inc.set_symbols(PAIRS)
    for sym in PAIRS:
        rows = candles(sym)
        bulk.append(sym, "1h", rows)
        ends = [b for b in bounds[1:] if b < len(rows)] + [len(rows)]
        pos = 0
        for k, end in enumerate(ends):
            resent = min(pos, k % 4)  # re-sending already stored candles must be harmless
            assert inc.append(sym, "1h", rows[pos - resent:end]) == end - pos
            pos = end
    assert_same_store(bulk, inc)


def test_appends_reuse_the_same_buffers():
    store = CandleStore(["1h", "4h"], 500)
    store.set_symbols(PAIRS)
    views = {tf: store.view(tf) for tf in store.timeframes}
    addresses = {(tf, f): getattr(v, f).__array_interface__["data"][0] for tf, v in views.items() for f in FIELDS}
    for sym in PAIRS:
        store.append(sym, "1h", candles(sym)[:300])
    for k in range(300, 1500):  # 1200 cycles of one new candle per pair
        for sym in PAIRS:
            store.append(sym, "1h", candles(sym)[k:k + 1])
    for tf in store.timeframes:
        v = store.view(tf)
        assert v is views[tf]
        for f in FIELDS:
            arr = getattr(v, f)
            assert arr.__array_interface__["data"][0] == addresses[(tf, f)]
            assert arr.flags.c_contiguous and arr.dtype == np.float64 and arr.shape == (len(PAIRS), 500)
    assert store.view("1h").counts.tolist() == [500] * len(PAIRS)
    np.testing.assert_array_equal(held(store, "1h", "BTC/USDT"), candles("BTC/USDT")[1000:1500])


def test_short_history_is_left_padded_with_nan():
    store = CandleStore(["1h"], 100)
    store.set_symbols(["BTC/USDT", "ETH/USDT"])
    assert store.last_ts("BTC/USDT", "1h") is None
    store.append("BTC/USDT", "1h", candles("BTC/USDT")[:30])
    v = store.view("1h")
    assert np.isnan(v.close[0, :70]).all() and not np.isnan(v.close[0, 70:]).any()
    assert np.isnan(v.close[1]).all() and v.counts.tolist() == [30, 0]
    assert store.last_ts("BTC/USDT", "1h") == int(candles("BTC/USDT")[29, 0])
    # already stored candles are ignored
    assert store.append("BTC/USDT", "1h", candles("BTC/USDT")[:30]) == 0
    assert store.append("BTC/USDT", "1h", candles("BTC/USDT")[20:31]) == 1


def test_set_symbols_keeps_rows_of_kept_symbols_and_pending_4h_state():
    a, b = CandleStore(["1h", "4h"], 500), CandleStore(["1h", "4h"], 500)
    a.set_symbols(["BTC/USDT", "DOGE/USDT", "COCOS/USDT"])
    b.set_symbols(["DOGE/USDT", "BTC/USDT"])
    for s in ("BTC/USDT", "DOGE/USDT", "COCOS/USDT"):
        a.append(s, "1h", candles(s)[:1001])  # ends inside a 4h bucket: pending state matters
    for s in ("BTC/USDT", "DOGE/USDT"):
        b.append(s, "1h", candles(s)[:1001])
    a.set_symbols(["DOGE/USDT", "BTC/USDT"])  # COCOS leaves, order changes
    assert_same_store(a, b)
    for s in ("BTC/USDT", "DOGE/USDT"):
        a.append(s, "1h", candles(s)[1001:1400])
        b.append(s, "1h", candles(s)[1001:1400])
    assert_same_store(a, b)
    a.set_symbols(["DOGE/USDT", "BTC/USDT", "ETH/USDT"])  # a newcomer starts empty
    assert a.view("1h").counts.tolist() == [500, 500, 0] and np.isnan(a.view("4h").close[2]).all()


def test_derived_timeframes():
    store = CandleStore(["1h", "4h"], 500)
    assert store.derived_from("4h") == "1h" and store.derived_from("1h") is None
    assert store.fetched_timeframes == ["1h"]
    store.set_symbols(["BTC/USDT"])
    with pytest.raises(ValueError, match="built from 1h"):
        store.append("BTC/USDT", "4h", candles("BTC/USDT")[:4])
    only_4h = CandleStore(["4h"], 500)
    assert only_4h.derived_from("4h") is None and only_4h.fetched_timeframes == ["4h"]


def test_15m_from_real_5m_data():
    sym = symbols("5m")[0]
    rows = candles(sym, "5m")[:20000]
    store = CandleStore(["5m", "15m"], 8000)
    store.set_symbols([sym])
    for k in range(0, len(rows), 777):
        store.append(sym, "5m", rows[k:k + 777])
    expected = reference_aggregate(rows, TIMEFRAME_MS["15m"], TIMEFRAME_MS["5m"])[-8000:]
    np.testing.assert_allclose(held(store, "15m", sym), expected, rtol=1e-12, atol=0)


def test_bad_input_is_refused():
    store = CandleStore(["1h"], 100)
    store.set_symbols(["BTC/USDT"])
    rows = candles("BTC/USDT")[:10]
    with pytest.raises(ValueError, match="ascending"):
        store.append("BTC/USDT", "1h", rows[::-1])
    with pytest.raises(ValueError, match="6 columns"):
        store.append("BTC/USDT", "1h", rows[:, :5])
    with pytest.raises(KeyError, match="set_symbols"):
        store.append("ETH/USDT", "1h", rows)
    with pytest.raises(ValueError, match="unknown timeframe"):
        CandleStore(["2h"], 100)
