"""Recorded-data files: hostile input is one line naming FILE:LINE (exit 65), and freqtrade's
json / json.gz candles load exactly like our CSVs (issue 14 item 14, issue 15 item 11)."""
from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core.backtest.runner import BacktestSpec, parse_date, run_backtest
from core.backtest.report import to_json
from core.clock import VirtualClock
from core.config import Config
from core.exchange.download import format_rows
from core.exchange.replay import HEADER, DataError, ReplayGateway, load_csv
from tests.conftest import OHLCV_1H, ROOT

H = 3_600_000
PAIRS = ["BTC/USDT", "ETH/USDT", "ADA/USDT", "XRP/USDT"]
END = parse_date("2021-01-10", "end")


def real(sym: str) -> np.ndarray:
    arr = np.loadtxt(OHLCV_1H / (sym.replace("/", "_") + ".csv"), delimiter=",", skiprows=1)
    return arr[arr[:, 0] < END]


def csv_dir(dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for sym in PAIRS:
        (dst / (sym.replace("/", "_") + ".csv")).write_text(HEADER + "\n" + format_rows(real(sym)))
    return dst


def freqtrade_dir(dst: Path) -> Path:
    """freqtrade's layout: flat, BASE_QUOTE-<tf>.json (and .json.gz), several timeframes side by side."""
    dst.mkdir(parents=True, exist_ok=True)
    for i, sym in enumerate(PAIRS):
        rows = [[int(r[0]), *map(float, r[1:])] for r in real(sym)]
        name = sym.replace("/", "_") + "-1h.json"
        text = json.dumps(rows)
        if i % 2:
            (dst / (name + ".gz")).write_bytes(gzip.compress(text.encode()))
        else:
            (dst / name).write_text(text)
        (dst / (sym.replace("/", "_") + "-5m.json")).write_text("[]")  # another timeframe: not read
    return dst


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_freqtrade_json_and_json_gz_load_like_csv(tmp_path):
    a = ReplayGateway(csv_dir(tmp_path / "csv"), VirtualClock(0))
    b = ReplayGateway(freqtrade_dir(tmp_path / "ft"), VirtualClock(0))
    assert sorted(a.data["1h"]) == sorted(b.data["1h"]) == sorted(PAIRS)
    for sym in PAIRS:
        assert np.array_equal(a.data["1h"][sym], b.data["1h"][sym])


def test_backtest_over_freqtrade_files_equals_csv(tmp_path):
    cfg = Config()
    cfg = replace(cfg, risk=replace(cfg.risk, max_drawdown_pct=0.5, max_daily_loss_pct=0.2))

    def run(folder):
        spec = BacktestSpec(data=folder, timeframe="1h", start_ms=None, end_ms=None, strategies=None, verify=0,
                            db=None)
        doc = to_json(asyncio.run(run_backtest(cfg, spec)))
        doc.pop("duration_s")
        return doc

    assert run(freqtrade_dir(tmp_path / "ft")) == run(csv_dir(tmp_path / "csv"))


def test_feather_files_are_named_with_the_conversion(tmp_path):
    d = tmp_path / "ft"
    d.mkdir()
    (d / "BTC_USDT-1h.feather").write_bytes(b"ARROW1")
    with pytest.raises(DataError, match=r"need pyarrow.*freqtrade convert-data --format-from feather"):
        ReplayGateway(d, VirtualClock(0))
    out = _cli("backtest", "--data", str(d))
    assert out.returncode == 65 and "pyarrow" in out.stderr and "Traceback" not in out.stderr


def _csv(tmp_path, body: bytes, name="BTC_USDT.csv") -> Path:
    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    (d / name).write_bytes(body)
    return d / name


def _rows(n: int, price: str = "100") -> bytes:
    return b"".join(f"{i * H},{price},{price},{price},{price},5\n".encode() for i in range(n))


@pytest.mark.parametrize("name, body, where, expected", [
    ("BTC_USDT.csv.gz", b"\x1f\x8b\x08\x00garbage", "BTC_USDT.csv.gz:", "not a readable gzip file"),
    ("BTC_USDT.csv", (HEADER + "\n").encode() + _rows(3)[:20] + b"\xff\xfe" + _rows(3)[20:], "BTC_USDT.csv:3:",
     "expected UTF-8"),
    ("BTC_USDT.csv", (HEADER + "\n").encode(), "BTC_USDT.csv:2:", "expected candle rows"),
    ("BTC_USDT.csv", (HEADER + "\n").encode() + _rows(1), "BTC_USDT.csv:2:", "at least 2 candles"),
    ("BTC_USDT.csv", (HEADER + "\n").encode() + b"0,1,1,1,1,5\n3600000,1e308,1e308,1e308,1e308,5\n",
     "BTC_USDT.csv:3:", "prices at most"),
    ("BTC_USDT.csv", b"\xef\xbb\xbfopen,high\n" + _rows(3), "BTC_USDT.csv:1:", "got 'open,high'"),
])
def test_bad_files_are_one_line_with_file_and_line(tmp_path, name, body, where, expected):
    path = _csv(tmp_path, body, name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no numpy warnings on the way
        with pytest.raises(DataError) as err:
            load_csv(path, H)
    assert where in str(err.value) and expected in str(err.value), str(err.value)
    assert "\ufeff" not in str(err.value)
    out = _cli("backtest", "--data", str(path.parent))
    assert out.returncode == 65, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and where in out.stderr and "Traceback" not in out.stderr


def test_a_bom_header_is_accepted(tmp_path):
    path = _csv(tmp_path, b"\xef\xbb\xbf" + (HEADER + "\n").encode() + _rows(3))
    assert load_csv(path, H).shape == (3, 6)


def test_price_1e308_is_refused_with_its_line(tmp_path):
    body = (HEADER + "\n").encode() + b"0,1,1,1,1,5\n3600000,1e308,1e308,1e308,1e308,5\n"
    with pytest.raises(DataError, match=r"BTC_USDT.csv:3: high: expected prices at most"):
        load_csv(_csv(tmp_path, body), H)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"BTC/USDT": {"price_tick": "abc"}}',
                                  '{"BTC/USDT": {"price_tick": 0.01}}', '{"BTC/USDT": 5}'])
def test_invalid_markets_json_is_one_line(tmp_path, text):
    d = tmp_path / "data"
    d.mkdir()
    (d / "BTC_USDT.csv").write_text(HEADER + "\n" + format_rows(real("BTC/USDT")[:50]))
    (d / "markets.json").write_text(text)
    with pytest.raises(DataError, match="markets.json"):
        ReplayGateway(d, VirtualClock(0))
    out = _cli("scan", "--replay", str(d), "--once")
    assert out.returncode == 65 and "markets.json" in out.stderr and "Traceback" not in out.stderr
