"""Trade statistics on a small fixture, every number checked by hand."""
from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given, strategies as st

from core.models import Position
from core.trading.stats import drawdown, group_stats, per_trade, trade_stats, worst_day

D = Decimal
T0 = 1_625_097_600_000
H = 3_600_000


def closed(pid, symbol, strategy, pnl, fees, opened_h, closed_h, amount="1"):
    return Position(symbol=symbol, strategy=strategy, amount=D(amount), entry_price=D("100"), stop=D("97"),
                    target=D("106"), opened_ms=T0 + opened_h * H, id=pid, entry_fees=D(fees) / 2,
                    exit_fees=D(fees) / 2, status="closed", closed_ms=T0 + closed_h * H, exit_price=D("101"),
                    exit_reason="take_profit", pnl=D(pnl))


TRADES = [
    closed(1, "BTC/USDT", "trend_following", "30", "2", 0, 2),
    closed(2, "ETH/USDT", "mean_reversion", "-10", "1", 1, 3),
    closed(3, "BTC/USDT", "mean_reversion", "5", "0.5", 5, 6),
    closed(4, "ADA/USDT", "momentum", "0", "0", 4, 4, amount="0"),  # entry never filled: not a trade
]
CURVE = [(T0 + i * H, D(v)) for i, v in enumerate(["1000", "1010", "990", "1020", "1005", "1000", "1025"])]


def test_overall_numbers():
    s = trade_stats(TRADES, CURVE, D("1000"))
    assert (s.trades, s.wins, s.losses) == (3, 2, 1)
    assert s.win_rate == pytest.approx(2 / 3)
    assert s.pnl == D("25") and s.fees == D("3.5")
    assert s.gross_profit == D("35") and s.gross_loss == D("10") and s.profit_factor == pytest.approx(3.5)
    assert s.best == D("30") and s.worst == D("-10")
    assert s.end_equity == D("1025") and s.return_pct == pytest.approx(0.025)
    # drawdown: 1010 -> 990 is 1.98 % (the deepest); 1020 -> 1000 lasts longest (3 h until 1025)
    assert s.max_drawdown == pytest.approx(20 / 1010)
    assert s.max_drawdown_duration_ms == 3 * H
    # time with a position open: [0 h, 3 h] and [5 h, 6 h] of 6 h
    assert s.exposure == pytest.approx(4 / 6)
    # hourly returns +1 %, -1.980198 %, +3.030303 %, -1.470588 %, -0.497512 %, +2.5 %:
    # mean 0.00430334, sample std 0.02081007, downside deviation 0.01027239; 8760 periods a year
    assert s.sharpe == pytest.approx(0.00430334 / 0.02081007 * math.sqrt(8760), rel=1e-5)
    assert s.sharpe == pytest.approx(19.3546, rel=1e-4)
    assert s.sortino == pytest.approx(39.2090, rel=1e-4)
    assert s.avg_hold_ms == (2 * H + 2 * H + 1 * H) // 3


def test_breakdowns_and_rows():
    by = group_stats(TRADES, lambda p: p.strategy)
    assert set(by) == {"trend_following", "mean_reversion"}
    mr = by["mean_reversion"]
    assert mr["trades"] == 2 and mr["wins"] == 1 and mr["pnl"] == -5.0 and mr["profit_factor"] == 0.5
    rows = per_trade(TRADES)
    assert [r["id"] for r in rows] == [1, 2, 3] and rows[0]["return_pct"] == 0.3


def test_no_trades_no_curve():
    s = trade_stats([], [], D("1000"))
    assert s.trades == 0 and s.win_rate == 0.0 and s.profit_factor is None and s.sharpe is None
    assert s.max_drawdown == 0.0 and s.end_equity == D("1000")
    assert s.to_dict()["pnl"] == 0.0


def test_worst_day_counts_from_each_utc_days_first_mark():
    day, h = 86_400_000, 3_600_000
    curve = [(0, D(1000)), (h, D(990)), (23 * h, D(1010)),  # day 0: -1 %
             (day, D(1000)), (day + h, D(960)), (day + 2 * h, D(1100)),  # day 1: -4 % from its first mark
             (2 * day, D(1100)), (2 * day + h, D(1090))]
    assert worst_day(curve) == (pytest.approx(0.04), day)
    assert worst_day([]) == (0.0, None) and worst_day([(0, D(5))]) == (0.0, None)


@given(st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=200),
       st.integers(min_value=1, max_value=30))
def test_worst_day_never_exceeds_the_drawdown_and_matches_a_brute_force(values, step_h):
    curve = [(i * step_h * 3_600_000, D(v)) for i, v in enumerate(values)]
    loss, _ = worst_day(curve)
    days: dict[int, list[Decimal]] = {}
    for ts, eq in curve:
        days.setdefault(ts // 86_400_000, []).append(eq)
    assert loss == max(float((v[0] - min(v)) / v[0]) for v in days.values())
    assert loss <= drawdown(curve)[0] + 1e-12
