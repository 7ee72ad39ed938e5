"""Real Binance replies from ../shared/data/raw, turned into core.models through the real ccxt
parsers (offline: ccxt's HTTP method is replaced by the recorded body, nothing else)."""
from __future__ import annotations

import asyncio
import gzip
import json
from functools import lru_cache
from pathlib import Path

from core.exchange.ccxt_convert import to_market, to_ticker
from core.models import Market, Ticker

RAW = Path(__file__).resolve().parents[3] / "shared" / "data" / "raw"
EXCHANGE_INFO = {2021: RAW / "ohlcv_import" / "exchange_info.json.gz",
                 2023: RAW / "Binance_API" / "exchangeInfoCompact.json.gz"}
CASSETTES = RAW / "binance" / "spec" / "fixtures" / "vcr_cassettes" / "binance.com" / "public"


@lru_cache(maxsize=2)
def exchange_info(year: int = 2023) -> dict:
    return json.loads(gzip.decompress(EXCHANGE_INFO[year].read_bytes()))


def cassette_body(name: str):
    """The recorded response body of a VCR cassette (a one-line single-quoted YAML scalar)."""
    for line in (CASSETTES / name).read_text().splitlines():
        if line.startswith("  body: '"):
            return json.loads(line[len("  body: '"):-1].replace("''", "'"))
    raise ValueError(f"{name}: no response body")


def _parsed(year: int, tickers_body=None):
    import ccxt.async_support as ccxt_async

    async def go():
        ex = ccxt_async.binance({"options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False}})
        info = exchange_info(year)

        async def recorded(params={}):
            return info

        ex.publicGetExchangeInfo = recorded
        try:
            raw = await ex.load_markets()
            markets = {m.symbol: m for m in (to_market(v, ex.precisionMode) for v in raw.values()) if m}
            ids = {v["symbol"]: v["id"] for v in raw.values()}
            tickers = {}
            if tickers_body is not None:
                for t in ex.parse_tickers(tickers_body).values():
                    tk = to_ticker(t, 0)
                    if tk:
                        tickers[tk.symbol] = tk
            return markets, tickers, ids
        finally:
            await ex.close()

    return asyncio.run(go())


def real_markets(year: int = 2023) -> dict[str, Market]:
    return _parsed(year)[0]


def real_market_ids(year: int = 2023) -> dict[str, str]:
    """ccxt symbol -> exchange id ("BTC/USDT" -> "BTCUSDT"; ccxt renames some assets)."""
    return _parsed(year)[2]


def real_markets_and_tickers(year: int = 2021) -> tuple[dict[str, Market], dict[str, Ticker]]:
    """Markets from the exchangeInfo of ``year`` and the recorded all-symbols 24 h tickers (2019)."""
    markets, tickers, _ = _parsed(year, cassette_body("twenty_four_hour_all.yml"))
    return markets, tickers
