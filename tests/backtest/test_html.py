"""The report page: self-contained, carries the key numbers, and renders in a real browser."""
from __future__ import annotations

import asyncio
import re
import struct
import zlib
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from core.backtest import baseline as B, html
from core.backtest.report import to_json
from core.backtest.runner import BacktestSpec, iso, parse_date, run_backtest
from core.models import Position
from tests.backtest.test_runner import cfg_for_tests, write_slice
from tests.support import chromium

D = 86_400_000


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    data = write_slice(tmp_path_factory.mktemp("slice"))
    spec = BacktestSpec(data, verify=0, start_ms=parse_date("2021-01-01", "x"))
    base = cfg_for_tests()
    cfg = replace(base, risk=replace(base.risk, max_drawdown_pct=0.03, max_daily_loss_pct=0.03,
                                     drawdown_cooloff_hours=0))
    result = asyncio.run(run_backtest(cfg, spec))
    bl = B.compute(result, spec, seeds=2, workers=1)
    path = tmp_path_factory.mktemp("page") / "report.html"
    html.write(path, result, bl)
    return result, bl, path


def test_page_is_self_contained_and_carries_the_numbers(page):
    result, bl, path = page
    text = path.read_text()
    doc = to_json(result, None, bl.doc)
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "<script" not in text and not re.search(r'(src|href)\s*=\s*"(https?:)?//', text)
    assert text.count("<svg") >= 3
    for figure in (html.pct(doc["return"], 2, True), html.ratio(doc["sharpe"]), html.ratio(doc["sortino"]),
                   html.pct(doc["max_drawdown"], 1), html.money(doc["end_equity"]), f"{doc['trades']:,}",
                   html.pct(bl.doc["buy_and_hold"]["btc"]["return"], 1, True),
                   html.pct(bl.doc["buy_and_hold"]["equal_weight"]["return"], 1, True),
                   "Monthly returns", "All trades", "By pair", "Strategy vs baselines", "random pairs p5..p95"):
        assert figure in text, figure
    # every trade is listed
    assert text.count("<tr>") >= doc["trades"]
    if doc["halted"]:
        assert html.esc(html.halt_text(doc).split(": ")[0]) in text


def test_halt_is_the_page_headline(page, tmp_path):
    """A run that halted leads with the halt: when, days traded, equity then and at the end."""
    result, bl, _ = page
    at = int(result.loaded.times[len(result.loaded.times) // 3])
    halted = replace(result, halts=[(at, "drawdown: equity 970 is 3% below the peak 1000")],
                     halt_cycles={"drawdown": int((result.loaded.times >= at).sum())}, halted_at_end=("drawdown",))
    path = tmp_path / "halted.html"
    html.write(path, halted, bl)
    text = path.read_text()
    doc = to_json(halted, None, bl.doc)
    days = (result.end_ms - result.start_ms) / D
    traded = (at - result.start_ms) / D
    assert doc["halted"]["days_traded"] == pytest.approx(traded, abs=1 / 24)
    head = f"halted on {iso(at)[:10]}, {traded:.0f} of {days:.0f} days traded"
    assert f'<div class="halt">{head}' in text and "stopped for good" in text
    assert text.index(head) < text.index("Strategy vs baselines")  # a headline, not a note


def test_headline_figures_by_hand():
    """CAGR, Calmar and expectancy in R from two hand-made trades over one year."""
    from core.backtest.runner import BacktestResult
    from core.config import Config

    t0 = 1_600_000_000_000
    year = int(html.YEAR_MS)

    def pos(i, entry, stop, amount, pnl):
        p = Position("BTC/USDT", "momentum", Decimal(amount), Decimal(entry), Decimal(stop), Decimal(entry) * 2,
                     t0 + i * D, id=i)
        p.status, p.closed_ms, p.exit_price, p.pnl = "closed", t0 + (i + 1) * D, Decimal(entry), Decimal(pnl)
        return p

    closed = [pos(1, "100", "90", "1", "20"), pos(2, "50", "45", "2", "-10")]  # +2 R and -1 R
    curve = [(t0, Decimal(1000)), (t0 + year // 2, Decimal(800)), (t0 + year, Decimal(1210))]
    result = BacktestResult(cfg=Config(), data=Path("x"), timeframe="1h", pairs=1, candles=0, cycles=3,
                            start_ms=t0, end_ms=t0 + year, closed=closed, curve=curve, signals=0, rejections={},
                            closed_at_end=0, verified=[], interrupted=False)
    doc = to_json(result)
    extra = html.headline(result, doc)
    assert extra["cagr"] == pytest.approx(0.21)
    assert extra["calmar"] == pytest.approx(0.21 / 0.2)
    assert extra["expectancy_r"] == pytest.approx(0.5) and extra["r_trades"] == 2


def test_monthly_returns_compound_to_the_total():
    t = 1_609_459_200_000  # 2021-01-01
    curve = [(t, Decimal(1000)), (t + 20 * D, Decimal(1100)), (t + 40 * D, Decimal(990)), (t + 70 * D, Decimal(1089))]
    m = html.monthly_returns(curve)
    assert m[2021][1] == pytest.approx(0.1) and m[2021][2] == pytest.approx(-0.1) and m[2021][3] == pytest.approx(0.1)
    assert np.prod([1 + v for v in m[2021].values()]) == pytest.approx(1.089)


def _png_pixels(path: Path) -> np.ndarray:
    """(H, W, channels) of an 8-bit RGB/RGBA PNG (enough of the format for chromium's screenshots)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, [], None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + n
    w, h, depth, colour = header[:4]
    assert depth == 8 and colour in (2, 6)
    ch = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = w * ch
    out = np.zeros((h, stride), dtype=np.int32)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(h):
        f = raw[y * (stride + 1)]
        row = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=y * (stride + 1) + 1).astype(np.int32)
        if f == 0:
            cur = row
        elif f == 2:
            cur = (row + prev) & 255
        else:
            cur = np.zeros(stride, dtype=np.int32)
            for x in range(stride):
                a = cur[x - ch] if x >= ch else 0
                b = prev[x]
                c = prev[x - ch] if x >= ch else 0
                if f == 1:
                    cur[x] = (row[x] + a) & 255
                elif f == 3:
                    cur[x] = (row[x] + (a + b) // 2) & 255
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                    cur[x] = (row[x] + pred) & 255
        out[y] = cur
        prev = cur
    return out.reshape(h, w, ch)


def test_screenshot_in_a_real_browser(page, tmp_path):
    """Chromium renders the page at 700 px: the picture is not blank, shows the charts' colours, and
    nothing sticks out sideways (the page is no wider than the window)."""
    if chromium.browser() is None:
        pytest.skip(f"no headless chromium: {chromium.why_not}")
    _, _, path = page
    png = chromium.screenshot(path, tmp_path / "page.png", width=700, height=2000)
    px = _png_pixels(png)[:, :, :3]
    assert px.shape[1] == 700
    flat = px.reshape(-1, 3)
    background = np.all(flat == flat[0], axis=1).mean()
    assert background < 0.9  # not one colour
    colours = {tuple(c) for c in flat[:: 97].tolist()}
    assert len(colours) > 50
    strategy_blue = np.array([0x1F, 0x5F, 0xBF])
    assert (np.abs(px - strategy_blue).sum(axis=2) < 30).sum() > 200  # the equity line is drawn
    # the page does not overflow 700 px: the right-most column is background-only for the top rows
    assert len({tuple(c) for c in px[:200, -1].tolist()}) <= 2
