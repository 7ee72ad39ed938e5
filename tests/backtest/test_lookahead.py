"""No look-ahead: changing the future leaves every earlier cycle's signals unchanged, for every
shipped strategy; and the check does catch an indicator that peeks."""
from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import numpy as np
import pytest

from core.backtest import lookahead
from core.backtest.runner import BacktestSpec, run_backtest
from strategies import registry
from tests.backtest.test_baseline import _cli
from tests.backtest.test_runner import cfg_for_tests, write_slice


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_slice(tmp_path_factory.mktemp("slice"))


def _run(data, strategy):
    return asyncio.run(run_backtest(cfg_for_tests(), BacktestSpec(data, verify=0, strategies=(strategy,))))


def test_perturb_changes_only_the_future():
    rows = {"A/USDT": np.array([[t * 3_600_000, 10, 11, 9, 10.5, 100] for t in range(10)], dtype=float)}
    out = lookahead.perturb(rows, 5 * 3_600_000)
    a, b = rows["A/USDT"], out["A/USDT"]
    assert np.array_equal(a[:5], b[:5]) and not np.array_equal(a[5:, 1:], b[5:, 1:])
    assert (b[:, 2] >= b[:, [1, 4]].max(axis=1)).all() and (b[:, 3] <= b[:, [1, 4]].min(axis=1)).all()


@pytest.mark.parametrize("strategy", registry.available())
def test_no_shipped_strategy_looks_ahead(data, strategy):
    res = _run(data, strategy)
    report = lookahead.check(res.cfg, res.loaded, res.table, cuts=3)
    assert report.ok, report.problems
    assert len(report.cuts) == 3 and report.cycles > 1000


def test_the_check_catches_an_indicator_that_peeks(data, monkeypatch):
    """An ATR that is the largest ATR still to come: stops of past signals move when the future does."""
    from core.scan.scanner import Indicators

    honest = Indicators.atr

    def peeking(self, n=14):
        a = np.nan_to_num(honest(self, n), nan=0.0)
        return np.flip(np.maximum.accumulate(np.flip(a, axis=1), axis=1), axis=1)

    monkeypatch.setattr(Indicators, "atr", peeking)
    strategy = next(s for s in registry.available() if _run(data, s).table.ranked)
    res = _run(data, strategy)
    report = lookahead.check(res.cfg, res.loaded, res.table, cuts=3)
    assert not report.ok and "changed when only later candles did" in report.problems[0]


def test_cli_check_lookahead(data):
    out = _cli("backtest", "--data", str(data), "--json", "--verify", "0", "--baseline-seeds", "0",
               "--check-lookahead")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["lookahead"]["ok"] and len(d["lookahead"]["cuts"]) == 3 and d["lookahead"]["cycles"] > 0
