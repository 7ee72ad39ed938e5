"""Shared fixtures for the risk / executor / status tests: configs, real markets, a real order book."""
from __future__ import annotations

import json
import re
from dataclasses import replace
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from core.config import Config, PaperConfig, RiskConfig, ScannerConfig, StrategiesConfig, TradingConfig
from core.models import Market, Opportunity, OrderBook

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
SAMPLE = ROOT / "data" / "sample"
DEPTH_BTC = DATA / "raw/binance/spec/fixtures/vcr_cassettes/binance.com/public/depth_100.yml"


def make_cfg(mode: str = "paper", **sections) -> Config:
    """A Config built directly (no strategy plugins needed); ``trading={...}`` etc. override fields."""
    cfg = Config(mode=mode, strategies=StrategiesConfig(enabled=()), scanner=ScannerConfig(min_opportunity_score=0.5))
    classes = {"trading": TradingConfig, "risk": RiskConfig, "paper": PaperConfig, "scanner": ScannerConfig}
    for name, values in sections.items():
        current = getattr(cfg, name)
        cfg = replace(cfg, **{name: replace(current, **values)})
    assert all(isinstance(getattr(cfg, n), c) for n, c in classes.items())
    return cfg


@lru_cache(maxsize=1)
def sample_markets() -> dict[str, Market]:
    """Real Binance filters (exchangeInfo 2021) of the sample pairs."""
    raw = json.loads((SAMPLE / "markets.json").read_text())

    def dec(v):
        if v is None:
            return None
        d = Decimal(v).normalize()
        return d.quantize(Decimal(1)) if d == d.to_integral_value() else d  # "10", not "1E+1"

    return {s: Market(s, r["base"], r["quote"], True, dec(r.get("amount_step")), dec(r.get("price_tick")),
                      dec(r.get("min_amount")), dec(r.get("min_cost")), dec(r.get("max_amount")))
            for s, r in raw.items()}


@lru_cache(maxsize=1)
def btc_depth() -> OrderBook:
    """A real BTCUSDT depth-100 snapshot recorded from api.binance.com (2020-11-03)."""
    text = DEPTH_BTC.read_text()
    body = re.search(r"body: '(\{\"lastUpdateId.*\})'", text).group(1)
    doc = json.loads(body)
    return OrderBook("BTC/USDT", 1604445287315,
                     tuple((float(p), float(a)) for p, a in doc["bids"]),
                     tuple((float(p), float(a)) for p, a in doc["asks"]))


def opp(symbol: str = "BTC/USDT", price: float = 13896.5, score: float = 80.0, stop: float | None = None,
        target: float | None = None, strategy: str = "trend_following") -> Opportunity:
    return Opportunity(symbol=symbol, strategy=strategy, side="buy", score=score, price=price,
                       stop=price * 0.98 if stop is None else stop, target=price * 1.05 if target is None else target,
                       reason="test signal")
