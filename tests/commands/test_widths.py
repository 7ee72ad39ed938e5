"""No table cuts a number or a symbol at any width (issue 14 item 7): at 40, 60, 80 and 120
columns every symbol and number of the data appears whole in the output."""
from __future__ import annotations

import io
import logging
import re
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from core.backtest.report import render as render_backtest
from core.backtest.runner import BacktestResult
from core.commands import scan, status
from core.config import Config
from core.engine.hooks import CycleReport
from core.models import Opportunity, Position, ScanResult
from core.service.dashboard import Dashboard
from core.service.tables import num

WIDTHS = (40, 60, 80, 120)
H = 3_600_000
D = Decimal


def console(width: int) -> Console:
    return Console(width=width, file=io.StringIO(), color_system=None, force_terminal=False, highlight=False)


def out(c: Console) -> str:
    return c.file.getvalue()


def assert_whole(text: str, values) -> None:
    missing = [v for v in values if v not in text]
    assert not missing, f"cut or missing: {missing}\n{text}"


def opportunities() -> list[Opportunity]:
    names = ["WAVES/USDT", "1000SHIB/USDT", "BTC/USDT", "ETH/USDT", "DOGE/USDT", "XRP/USDT", "ADA/USDT",
             "SOL/USDT", "DOT/USDT", "COCOS/USDT", "BTCST/USDT"]
    return [Opportunity(sym, "trend_following" if i % 2 else "mean_reversion", "buy", 90 - i,
                        0.045147 * (10 ** (i % 6)), 0.04379259 * (10 ** (i % 6)), 0.0523705 * (10 ** (i % 6)),
                        "EMA20>EMA50 (crossed 3 candles ago), close>EMA20, MACD hist>0 rising, ADX 31, RSI 61")
            for i, sym in enumerate(names)]


@pytest.mark.parametrize("width", WIDTHS)
def test_scan_table(width):
    opps = opportunities()
    c = console(width)
    scan.render(c, ScanResult(126, 0, {}, 0.5, opps, ts_ms=1_620_000_000_000))
    text = out(c)
    assert_whole(text, [o.symbol for o in opps] + [num(o.price) for o in opps] + [str(i) for i in range(1, 12)])
    assert "0.045147" in text
    if width >= 80:
        assert_whole(text, [num(o.stop) for o in opps] + [num(o.target) for o in opps])


@pytest.mark.parametrize("width", WIDTHS)
def test_scan_rank_10_is_not_cut_to_1(width):
    c = console(width)
    scan.render(c, ScanResult(126, 0, {}, 0.5, opportunities(), ts_ms=1_620_000_000_000))
    assert re.search(r"(\b10\b[^\n]*COCOS/USDT)|(#\s+10\s*\nsymbol\s+COCOS/USDT)", out(c)), out(c)


def status_doc() -> dict:
    return {"mode": "paper", "equity": 1016.42, "day_pnl": 12.5, "halts": [], "last_scan": None,
            "health": {"ts_ms": 1, "summary": "health: ok", "entries_paused": False},
            "open_positions": [
                {"id": i, "symbol": sym, "strategy": strat, "status": "open", "amount": amount,
                 "entry_price": entry, "stop": entry * 0.97, "target": entry * 1.06, "highest": entry,
                 "opened_ms": 1_620_000_000_000, "score": 70.0, "entry_fees": 0.1, "last_price": last,
                 "last_price_ms": 1_620_000_360_000, "unrealised_pnl": None if last is None else
                 (last - entry) * amount - 0.1, "unrealised_pct": None if last is None else (last / entry - 1)}
                for i, (sym, strat, amount, entry, last) in enumerate([
                    ("WAVES/USDT", "trend_following", 12.345678, 0.045147, 0.046012),
                    ("BTC/USDT", "mean_reversion", 0.00123, 38123.45, 39001.17),
                    ("1000SHIB/USDT", "momentum", 100000.0, 0.00001234, None)], 1)]}


@pytest.mark.parametrize("width", WIDTHS)
def test_status(width):
    doc = status_doc()
    c = console(width)
    status.render(c, doc, "USDT")
    text = out(c)
    ps = doc["open_positions"]
    assert_whole(text, [p["symbol"] for p in ps] + [num(p["entry_price"]) for p in ps]
                 + [num(p["last_price"]) for p in ps if p["last_price"]] + ["no price yet", "1,016.42", "+12.50"])
    assert "…" not in text and "ts_ms" not in text  # no ellipsis, no raw health record
    if width >= 80:
        assert_whole(text, [f"{p['unrealised_pnl']:+,.2f}" for p in ps if p["unrealised_pnl"] is not None])
    if "strategy" in text:  # a column dropped at this width is gone, never half there
        assert_whole(text, ["trend_following", "mean_reversion", "momentum"])


def backtest_result() -> BacktestResult:
    def pos(i, sym, strat, pnl, fee, opened_h, closed_h, reason):
        return Position(symbol=sym, strategy=strat, amount=D("1.2345"), entry_price=D("0.045147"), stop=D(0),
                        target=D(1), opened_ms=opened_h * H, id=i, status="closed", closed_ms=closed_h * H,
                        exit_price=D("0.046321"), exit_reason=reason, entry_fees=fee, exit_fees=fee, pnl=pnl)

    closed = [pos(1, "WAVES/USDT", "momentum", D("1234.56"), D("0.5"), 0, 2, "take_profit"),
              pos(2, "1000SHIB/USDT", "trend_following", D("-20.25"), D("12.5"), 2, 4, "stop_loss"),
              pos(3, "BTCST/USDT", "mean_reversion", D("10.75"), D("0.25"), 4, 6, "trailing_stop")]
    curve = [(h * H, D(e)) for h, e in [(1, 10100), (2, 11334.56), (3, 11200), (4, 11314.31), (6, 11325.06)]]
    return BacktestResult(cfg=Config(), data=Path("data/x"), timeframe="1h", pairs=3, candles=16_500, cycles=6,
                          start_ms=H, end_ms=6 * H, closed=closed, curve=curve, signals=1234,
                          rejections={"max_positions": 12_345}, closed_at_end=0, verified=[], interrupted=False)


@pytest.mark.parametrize("width", WIDTHS)
def test_backtest_report(width):
    c = console(width)
    render_backtest(c, backtest_result(), timing=False)
    text = out(c)
    assert_whole(text, ["WAVES/USDT", "1000SHIB/USDT", "BTCST/USDT", "+1,234.56", "-20.25", "+10.75",
                        "trend_following", "mean_reversion", "momentum"])
    assert "…" not in text


@pytest.mark.parametrize("width", WIDTHS)
def test_dashboard(width):
    c = console(width)
    positions = [Position(symbol="WAVES/USDT", strategy="trend_following", amount=D("12.345678"),
                          entry_price=D("0.045147"), stop=D("0.04379259"), target=D("0.0523705"), opened_ms=H, id=1)]
    report = CycleReport(2 * H, ScanResult(119, 0, {}, 0.02, []), D("1016.42"), D("500"), 1,
                         prices={"WAVES/USDT": 0.046012})
    with Dashboard(c, 10, D(1000), "USDT") as dash:
        dash.update(report, positions)
    assert_whole(out(c), ["WAVES/USDT", "0.046012", "1,016.42"])


def test_dashboard_routes_log_lines_through_the_display():
    """Issue 14 item 6: a warning during the live view goes through its console, not raw stderr."""
    raw = io.StringIO()
    root = logging.getLogger()
    handler = logging.StreamHandler(raw)
    root.addHandler(handler)
    c = Console(width=100, file=io.StringIO(), force_terminal=True, color_system=None)
    try:
        with Dashboard(c, 10, D(1000), "USDT"):
            assert handler not in root.handlers
            logging.getLogger("core.test").warning("no price for open position WAVES/USDT")
        assert handler in root.handlers  # restored
    finally:
        root.removeHandler(handler)
    assert raw.getvalue() == ""
    assert "no price for open position WAVES/USDT" in out(c)


def test_dashboard_says_it_is_compiling_before_the_first_scan():
    c = console(120)
    with Dashboard(c, 10, D(1000), "USDT"):
        pass
    assert "compiling the numba kernels (first run only" in out(c)
