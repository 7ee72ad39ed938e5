"""A small slice of the real 1h data (10 pairs, 2021-01-01 .. 2021-02-08) shared by the research tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.backtest.runner import parse_date
from core.exchange.download import format_rows
from core.exchange.replay import HEADER
from tests.conftest import OHLCV_1H, SAMPLE

PAIRS = ["ADA/USDT", "BCH/USDT", "BTC/USDT", "DOGE/USDT", "DOT/USDT", "ETH/USDT", "LINK/USDT", "LTC/USDT",
         "THETA/USDT", "XRP/USDT"]
START, END = parse_date("2021-01-01", "start"), parse_date("2021-02-08", "end")

SPACE = {
    "fixed": {"risk.max_drawdown_pct": 1.0, "risk.max_daily_loss_pct": 1.0},
    "params": {
        "strategies.params.momentum.roc_period": {"type": "int", "low": 5, "high": 30},
        "risk.risk_per_trade_pct": {"type": "float", "low": 0.002, "high": 0.03, "log": True},
        "strategies.enabled": {"type": "choice", "choices": [["momentum"], ["momentum", "mean_reversion"]]},
    },
}


@pytest.fixture(scope="session")
def slice_dir(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("research") / "data"
    (dst / "1h").mkdir(parents=True)
    markets = json.loads((SAMPLE / "markets.json").read_text())
    (dst / "markets.json").write_text(json.dumps({s: markets[s] for s in PAIRS if s in markets}))
    for sym in PAIRS:
        name = sym.replace("/", "_") + ".csv"
        arr = np.loadtxt(OHLCV_1H / name, delimiter=",", skiprows=1)
        arr = arr[(arr[:, 0] >= START) & (arr[:, 0] < END)]
        (dst / "1h" / name).write_text(HEADER + "\n" + format_rows(arr))
    return dst


@pytest.fixture
def space_file(tmp_path):
    def write(doc: dict | str = SPACE, name: str = "space.json") -> Path:
        path = tmp_path / name
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        return path

    return write
