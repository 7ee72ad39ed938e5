"""Walk-forward: window plans (a property), stitching, the verdict, and `pitrader validate` end to end."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from core.cli import main
from core.research.walkforward import WindowError, curve_stats, plan_windows, stitch
from core.timeframes import DAY_MS
from tests.research.conftest import SPACE

H = 3_600_000


@settings(max_examples=200, deadline=None)
@given(first=st.integers(0, 10_000).map(lambda h: h * H), hours=st.integers(2, 20_000),
       windows=st.none() | st.integers(1, 12), days=st.none() | st.tuples(st.floats(0.5, 200), st.floats(0.5, 60)),
       anchored=st.booleans())
def test_windows_never_let_a_test_window_see_its_own_training(first, hours, windows, days, anchored):
    last = first + hours * H
    try:
        plan = plan_windows(first, last, H, windows, *(days or (None, None)), anchored)
    except WindowError:
        return
    assert plan and (windows is None or len(plan) <= windows)
    for i, w in enumerate(plan):
        assert first <= w.train_start < w.train_end == w.test_start < w.test_end <= last
        assert all(t % H == first % H for t in (w.train_start, w.train_end, w.test_end))
        if anchored:
            assert w.train_start == plan[0].train_start
        else:
            assert w.train_end - w.train_start == plan[0].train_end - plan[0].train_start
        if i:
            assert w.test_start == plan[i - 1].test_end  # test windows tile the tested period
    assert plan[-1].test_end == last  # the most recent data is tested
    if days:
        assert plan[0].test_end - plan[0].test_start == int(days[1] * DAY_MS) // H * H


def test_windows_that_do_not_fit_are_refused_in_one_line():
    with pytest.raises(WindowError, match=r"usable span \(10\.0 days after warm-up\)"):
        plan_windows(0, 10 * DAY_MS, H, 3, 30, 10, False)
    with pytest.raises(WindowError, match="go together"):
        plan_windows(0, 100 * DAY_MS, H, None, 30, None, False)


def test_stitching_compounds_the_test_windows():
    curve = stitch([[(1, 1.1), (2, 1.2)], [(3, 0.9), (4, 0.5)], [(5, 2.0)]])
    assert curve == [(1, 1.1), (2, 1.2), (3, pytest.approx(1.08)), (4, pytest.approx(0.6)), (5, pytest.approx(1.2))]
    stats = curve_stats(curve)
    assert stats["return"] == pytest.approx(0.2)
    assert stats["max_drawdown"] == pytest.approx(0.5)  # 1.2 -> 0.6


def test_validate_end_to_end(slice_dir, space_file, tmp_path, capsys):
    args = ["--state-dir", str(tmp_path / "var"), "validate", "--data", str(slice_dir), "--space",
            str(space_file(SPACE)), "--objective", "return", "--windows", "2", "--trials", "3", "--jobs", "2", "--json"]
    assert main(args) in (0, 1)
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"objective", "anchored", "trials_per_window", "seed", "batch", "study", "windows",
                        "stitched", "verdict", "verdict_text"}
    assert len(doc["windows"]) == 2 and doc["verdict"] in ("holds", "overfit", "no_edge", "none")
    one, two = doc["windows"]
    assert one["test_to"] == two["test_from"] and one["train_to"] == one["test_from"]
    for w in doc["windows"]:
        assert set(w) == {"index", "train_from", "train_to", "test_from", "test_to", "params", "trials_completed",
                          "trials_failed", "in_sample", "out_of_sample", "out_of_sample_error"}
        assert w["trials_completed"] + w["trials_failed"] == 3
        if w["params"] is not None:
            assert set(w["params"]) == set(SPACE["params"])
            assert w["in_sample"]["objective"] == w["in_sample"]["return"]
            assert set(w["out_of_sample"]) == {"objective", "return", "trades", "max_drawdown", "sharpe", "halts"}
    s = doc["stitched"]
    oos = [1 + w["out_of_sample"]["return"] for w in doc["windows"] if w["out_of_sample"]]
    if len(oos) == 2:  # the stitched return chains the test windows' returns
        assert s["return"] == pytest.approx(oos[0] * oos[1] - 1, abs=1e-9)
    assert doc["verdict_text"].split(":")[0] in ("HOLDS UP out of sample", "OVERFIT", "NO EDGE", "no verdict")

    # the same command again reuses every train trial (resumable) and prints the same result
    assert main(args) in (0, 1)
    again = json.loads(capsys.readouterr().out)
    assert again == doc

    # and the terminal report
    assert main(args[:-1]) in (0, 1)
    out = capsys.readouterr().out
    assert "walk-forward, rolling windows" in out and "stitched out-of-sample equity" in out
