"""Pieces of core.backtest.signals the end-to-end comparisons in test_runner.py do not isolate."""
from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st

from core.backtest import signals
from core.backtest.signals import _chunks
from core.backtest.windows import Frame, _Outputs


@given(st.lists(st.booleans(), max_size=3000), st.integers(1, 200), st.integers(1, 300))
def test_chunks_cover_every_wanted_row_once(bits, chunk, gap):
    """Ranges are in bounds, disjoint, at most CHUNK_ROWS long, cover every wanted row and each
    holds one (no range made only of unwanted rows)."""
    wanted = np.array(bits, dtype=bool)
    old = signals.CHUNK_ROWS, signals.GAP_ROWS
    signals.CHUNK_ROWS, signals.GAP_ROWS = chunk, gap
    try:
        ranges = _chunks(wanted)
    finally:
        signals.CHUNK_ROWS, signals.GAP_ROWS = old
    covered = np.zeros(len(wanted), dtype=int)
    for a, b in ranges:
        assert 0 <= a < b <= len(wanted) and b - a <= chunk
        assert wanted[a:b].any()
        covered[a:b] += 1
    assert (covered <= 1).all()
    assert (covered[wanted] == 1).all()


def test_chunks_merge_close_runs_and_split_far_ones():
    wanted = np.zeros(2000, dtype=bool)
    wanted[10:20] = wanted[30:40] = wanted[1500:1510] = True
    assert _chunks(wanted) == [(10, 40), (1500, 1510)]
    assert _chunks(np.zeros(5, dtype=bool)) == []


def test_outputs_wrap_each_output_on_first_read():
    frame = Frame("1h", ("A/USDT",), [np.ones((5, 6))], width=3)
    full = tuple(np.arange(16, dtype=float).reshape(2, 8) * k for k in (1, 10, 100))
    rows = np.array([0, 2, 2])
    out = _Outputs(frame, rows, full)
    expected = [frame.windows(m)[rows] for m in full]
    assert len(out) == 3 and out._done == [None, None, None]
    np.testing.assert_array_equal(out[2], expected[2])
    assert out._done[0] is None and out[-1] is out[2]  # wrapped once, then reused
    a, b, c = out
    for got, want in zip((a, b, c), expected):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.asarray(out), np.stack(expected))  # numpy sees the windows
    assert [x.shape for x in out[1:]] == [(3, 3), (3, 3)]
