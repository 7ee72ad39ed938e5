"""Baselines: random entries through the same engine, buy-and-hold, and the strategy's percentile."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from core.backtest import baseline as B
from core.backtest.runner import BacktestSpec, iso, parse_date, run_backtest
from tests.backtest.test_runner import PAIRS, cfg_for_tests, write_slice
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_slice(tmp_path_factory.mktemp("slice"))


@pytest.fixture(scope="module")
def run(data):
    return asyncio.run(run_backtest(cfg_for_tests(), BacktestSpec(data, verify=0)))


@pytest.fixture(scope="module")
def inputs(run):
    return B.inputs_of(run.table)


def test_inputs_carry_the_real_opportunities_and_the_scanner_atr(run, inputs):
    t = run.table
    assert len(inputs.opp_cycle) == int((t.opp_at >= 0).sum()) > 0
    assert (np.diff(inputs.opp_cycle) >= 0).all()
    # close and ATR at one (pair, cycle) by hand: Wilder's ATR14 over the pair's candles up to then
    p = t.symbols.index("BTC/USDT")
    i = len(t.times) // 2
    k = int(t.k[p, i])
    rows = t.sig.rows[p][:k + 1]
    h, lo, c = rows[:, 2], rows[:, 3], rows[:, 4]
    tr = np.maximum(h[1:] - lo[1:], np.maximum(abs(h[1:] - c[:-1]), abs(lo[1:] - c[:-1])))
    atr = tr[:14].mean()
    for x in tr[14:]:
        atr = (atr * 13 + x) / 14
    assert inputs.close[p, i] == c[-1]
    assert inputs.atr[p, i] == pytest.approx(atr, rel=1e-9)


def test_random_pairs_keep_timing_count_scores_labels_and_exit_geometry(run, inputs):
    """Pair choice only: per cycle as many entries as the strategies had (eligible pairs permitting),
    with the same scores and strategy labels in rank order, on eligible pairs, and the stop and target
    of the opportunity in the same rank: the same distances in ATR14, each of its own pair."""
    table = B.RandomTable(inputs, seed=3, mode="random")
    elig = inputs.eligible
    real_opps = {i: run.table.result(i).opportunities for i in np.unique(inputs.opp_cycle).tolist()}
    checked = 0
    for i in range(len(inputs.times)):
        opps = table.result(i).opportunities
        want = real_opps.get(i, [])
        assert len(opps) == min(len(want), int(elig[:, i].sum()))
        assert [(o.score, o.strategy) for o in opps] == [(w.score, w.strategy) for w in want[:len(opps)]]
        syms = [o.symbol for o in opps]
        assert len(set(syms)) == len(syms)
        for o, w in zip(opps, want):
            p, q = inputs.symbols.index(o.symbol), inputs.symbols.index(w.symbol)
            assert elig[p, i]
            c, a, a_real = inputs.close[p, i], inputs.atr[p, i], inputs.atr[q, i]
            assert o.price == c
            assert (o.price - o.stop) / a == pytest.approx((w.price - w.stop) / a_real, rel=1e-9)
            assert (o.target - o.price) / a == pytest.approx((w.target - w.price) / a_real, rel=1e-9)
            checked += 1
    assert checked > 10
    # the geometry is the strategies' own, not one fixed rule: it varies between opportunities
    assert len(np.unique(np.round(inputs.opp_target_atr, 6))) > 1


def test_random_timing_copies_the_geometry_of_its_own_strategy(run, inputs):
    """Each random-timing entry carries the (stop, target) distances in ATR14 of one real opportunity of
    the strategy whose label it bears."""
    table = B.RandomTable(inputs, seed=2, mode="random_timing")
    pos = {s: p for p, s in enumerate(inputs.symbols)}
    real: dict[str, set] = {}
    for i in np.unique(inputs.opp_cycle).tolist():
        for w in run.table.result(i).opportunities:
            a = inputs.atr[pos[w.symbol], i]
            real.setdefault(w.strategy, set()).add((round((w.price - w.stop) / a, 6), round((w.target - w.price) / a, 6)))
    assert table.ranked
    for i in range(len(inputs.times)):
        for o in table.result(i).opportunities:
            a = inputs.atr[pos[o.symbol], i]
            assert (round((o.price - o.stop) / a, 6), round((o.target - o.price) / a, 6)) in real[o.strategy]


def test_exit_geometry_falls_back_to_the_strategy_median():
    """An opportunity whose pair has no usable ATR takes its strategy's median distances."""
    from core.models import Opportunity

    opps = [Opportunity("A/USDT", "s", "buy", 80.0, 100.0, 100.0 - k, 100.0 + 2 * k, "r") for k in (1.0, 3.0, 2.0)]
    atr = np.array([[1.0, 1.0, np.nan]])
    stop, target = B.exit_geometry(opps, np.array([0, 1, 2]), np.zeros(3, dtype=np.int64), ("A/USDT",), atr)
    assert stop.tolist() == [1.0, 3.0, 2.0] and target.tolist() == [2.0, 6.0, 4.0]


def test_random_timing_matches_the_opportunity_count(inputs):
    table = B.RandomTable(inputs, seed=0, mode="random_timing")
    m, cells = len(inputs.opp_cycle), int(inputs.eligible.sum())
    q = m / cells
    sd = (cells * q * (1 - q)) ** 0.5
    assert abs(len(table.ranked) - m) < 5 * sd  # a binomial draw with mean m
    for i in range(len(inputs.times)):
        scores = [o.score for o in table.result(i).opportunities]
        assert scores == sorted(scores, reverse=True)
    assert {o.strategy for o in table.ranked} <= set(inputs.strategies)


@pytest.mark.parametrize("mode", B.MODES)
def test_deterministic_per_seed(inputs, mode):
    a, b, c = (B.RandomTable(inputs, s, mode).ranked for s in (5, 5, 6))
    assert a == b and a != c


def test_engine_over_a_random_table_enters_only_drawn_pairs(run, inputs):
    table = B.RandomTable(inputs, seed=1, mode="random")
    out = asyncio.run(B.run_seed(run.loaded, inputs, 1, "random"))
    drawn = {(o.symbol, i) for i in range(len(inputs.times)) for o in table.result(i).opportunities}
    from core.backtest.runner import simulate

    res = asyncio.run(simulate(run.loaded, table))
    assert res.closed and out["trades"] == len(res.closed)
    for pos in res.closed:
        i = int(np.searchsorted(inputs.times, pos.opened_ms))
        assert (pos.symbol, i) in drawn
    # the same engine: the strategy run over its own table again gives its own trades
    again = asyncio.run(simulate(run.loaded, run.table))
    assert [(p.symbol, p.opened_ms, p.pnl) for p in again.closed] == [(p.symbol, p.opened_ms, p.pnl)
                                                                      for p in run.closed]


@given(st.lists(st.floats(-1, 5, allow_nan=False), min_size=1, max_size=30), st.floats(-1, 5, allow_nan=False))
@settings(max_examples=200, deadline=None)
def test_percentile_and_p_value(values, actual):
    d = B.distribution(values, actual)
    below = sum(v < actual for v in values)
    assert 0 <= d["percentile"] <= 100
    assert d["p_value"] == (1 + len(values) - below) / (1 + len(values))
    assert d["min"] <= d["p5"] <= d["median"] <= d["p95"] <= d["max"]
    if actual > max(values):
        assert d["percentile"] == 100 and d["p_value"] == 1 / (1 + len(values))
    if actual < min(values):
        assert d["percentile"] == 0 and d["p_value"] == 1


def test_buy_and_hold_by_hand(inputs):
    """The paper executor's bookless fills on both legs: buy at close x 1.0005 (half of a 0.1 % spread)
    x 1.0005 (slippage) plus the 0.1 % fee, sell at close x 0.9995 x 0.9995 less the fee."""
    fee, slip, spread = 0.001, 0.0005, 0.001
    hold = B.buy_and_hold(inputs, "USDT", fee, slip, spread)
    cost = (0.9995 * 0.9995 * 0.999) / (1.0005 * 1.0005 * 1.001)
    p = inputs.symbols.index("BTC/USDT")
    assert hold["btc"]["return"] == pytest.approx(inputs.close[p, -1] / inputs.close[p, 0] * cost - 1)
    members = [q for q in range(len(inputs.symbols)) if inputs.universe[q, 0] and np.isfinite(inputs.close[q, 0])]
    last = []
    for q in members:
        row = inputs.close[q]
        last.append(row[np.flatnonzero(np.isfinite(row))[-1]] / row[0])
    assert hold["equal_weight"]["pairs"] == len(members) > 1
    assert hold["equal_weight"]["return"] == pytest.approx(np.mean(last) * cost - 1)


def test_compute_in_worker_processes_is_deterministic(run, data):
    """Seeds in spawned workers give the numbers of the same seeds run in this process, in task order."""
    spec = BacktestSpec(data, verify=0)
    a = B.compute(run, spec, seeds=2, workers=2)
    assert a.doc["random"]["seeds"] == a.doc["random_timing"]["seeds"] == 2
    here = [asyncio.run(B.run_seed(run.loaded, B.inputs_of(run.table), s, "random"))["return"] for s in (0, 1)]
    assert a.doc["random"]["returns"] == here
    b = B.compute(run, spec, seeds=2, workers=1)
    assert json.dumps(a.doc) == json.dumps(b.doc)
    per = a.doc["by_strategy"]
    assert set(per) == set(run.cfg.strategies.enabled)
    for name, g in per.items():
        assert set(g["random"]) == {"pnl", "profit_factor", "trades"}


def _cli(*args, config=None):
    cmd = [sys.executable, "-m", "core"] + (["--config", str(config)] if config else []) + list(args)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_cli_json_and_page_show_the_baselines(data, tmp_path):
    cfg = tmp_path / "config.json"
    doc = json.loads((ROOT / "config.json").read_text())
    doc["risk"].update(max_drawdown_pct=0.5, max_daily_loss_pct=0.2)
    cfg.write_text(json.dumps(doc))
    out = _cli("backtest", "--data", str(data), "--json", "--verify", "0", "--baseline-seeds", "2", config=cfg)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    b = d["baselines"]
    assert set(b["buy_and_hold"]) == {"btc", "equal_weight"}
    for mode in ("random", "random_timing"):
        blk = b[mode]
        assert blk["seeds"] == 2 and len(blk["returns"]) == 2
        assert blk["min"] <= blk["median"] <= blk["max"] and 0 <= blk["percentile"] <= 100
        assert set(blk["profit_factor"]) >= {"min", "p5", "median", "p95", "max", "percentile", "p_value"}
    assert set(b["by_strategy"]) == set(d["by_strategy"])
    assert d["halted"] is None
    out = _cli("backtest", "--data", str(data), "--json", "--verify", "0", "--baseline-seeds", "0",
               "--strategies", "momentum")
    d = json.loads(out.stdout)
    assert "random" not in d["baselines"] and "btc" in d["baselines"]["buy_and_hold"]
    out = _cli("backtest", "--data", str(data), "--verify", "0", "--baseline-seeds", "1")
    assert out.returncode == 0, out.stderr
    for words in ("strategy vs baselines", "buy & hold BTC", "random pairs, median of", "random timing",
                  "percentile"):
        assert words in out.stdout, words
    out = _cli("backtest", "--data", str(data), "--baseline-seeds", "-1")
    assert out.returncode == 2 and "--baseline-seeds" in out.stderr


def busy(inputs: B.Inputs, per_cycle: int = 2) -> B.Inputs:
    """``inputs`` with ``per_cycle`` opportunities at every cycle: random runs that trade whatever
    the shipped strategies do."""
    n = len(inputs.times)
    cyc = np.repeat(np.arange(n), per_cycle)
    return B.Inputs(inputs.symbols, inputs.timeframe, inputs.times, inputs.universe, inputs.ok, inputs.close,
                    inputs.atr, cyc, np.full(len(cyc), 90.0), np.zeros(len(cyc), dtype=np.int64),
                    inputs.strategies, np.full(len(cyc), 2.0), np.full(len(cyc), 4.0))


def halted_run(data, cooloff: float):
    """A random-entry run over the slice that hits a 2 % drawdown halt (the first seed that does)."""
    from core.backtest.runner import simulate

    base = cfg_for_tests()
    cfg = replace(base, risk=replace(base.risk, max_drawdown_pct=0.02, max_daily_loss_pct=0.02,
                                     drawdown_cooloff_hours=cooloff))
    res = asyncio.run(run_backtest(cfg, BacktestSpec(data, verify=0)))
    inputs = busy(B.inputs_of(res.table))
    for seed in range(10):
        table = B.RandomTable(inputs, seed, "random")
        out = asyncio.run(simulate(res.loaded, table))
        if any(h.startswith("drawdown") for _, h in out.halts):
            return res, inputs, table, out
    pytest.fail("no seed reached the drawdown halt")


def test_halt_is_a_headline(data):
    """A drawdown halt: when, how much of the run traded, equity then and at the end, and the text."""
    from core.backtest.report import halt_text, halted, to_json

    _, _, _, out = halted_run(data, cooloff=0)
    h = halted(out)
    first = next(ts for ts, text in out.halts if text.startswith("drawdown"))
    assert h["at"] == iso(first) and h["times"] == 1 and h["to_the_end"]
    days_after = (out.end_ms - first) / 86_400_000
    assert h["days_traded"] == pytest.approx(h["days"] - days_after, abs=2 / 24)  # paused from the halt on
    assert h["end_equity"] == float(out.curve[-1][1]) and h["equity_at_halt"] is not None
    text = halt_text(to_json(out))
    assert text.startswith(f"halted on {h['at'][:10]}, {h['days_traded']:.0f} of {h['days']:.0f} days traded: "
                           "new entries stopped for good")
    # with a cooling-off the halt pauses entries; the headline counts the halts
    _, _, _, out = halted_run(data, cooloff=24)
    h = halted(out)
    assert h["times"] == sum(text.startswith("drawdown") for _, text in out.halts) >= 1
    assert 0 < h["days_traded"] < h["days"]
    assert "paused" in halt_text(to_json(out)) or h["to_the_end"]


def test_cli_shows_the_halt_when_there_is_one(data, tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"risk": {"max_drawdown_pct": 0.03, "max_daily_loss_pct": 0.03,
                                        "drawdown_cooloff_hours": 0}}))
    args = ("backtest", "--data", str(data), "--verify", "0", "--baseline-seeds", "0", "--from", "2021-01-01")
    d = json.loads(_cli(*args, "--json", config=cfg).stdout)
    out = _cli(*args, config=cfg)
    assert out.returncode == 0, out.stderr
    if d["halted"] is None:
        assert "halted on" not in out.stdout and not any(x["halt"].startswith("drawdown") for x in d["halts"])
    else:
        h = d["halted"]
        assert f"halted on {h['at'][:10]}, {h['days_traded']:.0f} of {h['days']:.0f} days traded" in out.stdout
        assert "after_halt" in d["baselines"]["buy_and_hold"]["btc"]


def test_a_halted_empty_account_settles_to_the_same_numbers(data):
    """The baselines stop a run once a permanent drawdown halt stands with nothing open; trades and
    the equity curve (continued flat) equal the full run's."""
    from core.backtest.runner import simulate
    from core.trading.stats import trade_stats

    res, inputs, table, full = halted_run(data, cooloff=0)
    fast = asyncio.run(simulate(res.loaded, table, settle_when_halted=True))
    assert fast.signals < full.signals  # it did stop early
    assert not fast.interrupted and fast.end_ms == full.end_ms
    assert [(p.symbol, p.opened_ms, p.closed_ms, p.pnl) for p in fast.closed] == \
        [(p.symbol, p.opened_ms, p.closed_ms, p.pnl) for p in full.closed]
    assert fast.curve == full.curve
    assert fast.halt_cycles == full.halt_cycles and fast.halted_at_end == full.halted_at_end
    start = res.cfg.paper.starting_balance
    assert trade_stats(fast.closed, fast.curve, start) == trade_stats(full.closed, full.curve, start)
    # a halt with a cooling-off lifts again: no settling there
    res, inputs, table, full = halted_run(data, cooloff=24)
    fast = asyncio.run(simulate(res.loaded, table, settle_when_halted=True))
    assert fast.signals == full.signals and fast.curve == full.curve
