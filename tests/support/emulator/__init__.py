"""Loopback Binance spot exchange for tests and development: real ccxt talks to it over HTTP.

    from tests.support.emulator import Emulator, Faults, running_emulator, redirect_ccxt

    with running_emulator(start_ms=..., balances={"USDT": "1000"}) as emu:
        ex = ccxt.async_support.binance({"apiKey": emu.api_key, "secret": emu.api_secret,
                                         "enableRateLimit": False, "options": dict(CCXT_OPTIONS)})
        redirect_ccxt(ex, emu.url)
        ...  # emu.advance(3_600_000), emu.faults.error_5xx_rate = 0.3, emu.balances, emu.trades

ccxt needs exactly two things: every ``urls['api']`` entry re-based on the emulator URL
(scheme, host and port replaced, path kept: ``/api/v3``, ``/sapi/v1``, ...) and
``options['fetchMarkets'] = {'types': ['spot']}``. With keys set, ccxt's load_markets also
calls ``/sapi/v1/capital/config/getall`` and ``/sapi/v1/margin/(isolated/)allPairs`` (signed;
served); ``options['fetchCurrencies'] = False`` and ``options['fetchMargins'] = False`` skip them.

What is served: the symbols that have OHLCV files *and* an entry in the exchangeInfo file
(126 with the 2023 file, 115 with the 2021 one); their exchangeInfo entries are the real
ones (status, filters), only ``serverTime`` and the REQUEST_WEIGHT limit are ours. Modules:
``candles`` (CSV -> numpy, aggregation), ``rules`` (exchangeInfo + filters), ``book``
(synthetic depth), ``params`` (order vocabulary, parameter parsing), ``orders`` (order and
trade records, their reply shapes), ``matching`` (account + order validation and placement),
``triggers`` (resting fills, stop / take-profit / trailing triggers on the candle path),
``orderlist`` (OCO), ``faults`` (switches + weight), ``handlers`` (routes and replies),
``list_handlers`` (order-list endpoints, cancelReplace), ``server`` (HTTP pipeline, signing,
the ``Emulator``), ``bench`` (``python -m tests.support.emulator.bench``).

Order types: LIMIT, MARKET, LIMIT_MAKER, STOP_LOSS(_LIMIT), TAKE_PROFIT(_LIMIT) with
``stopPrice`` and/or ``trailingDelta``, OCO lists (``/api/v3/orderList/oco`` and the deprecated
``/api/v3/order/oco``) and ``/api/v3/order/cancelReplace`` (ccxt's ``edit_order``). The symbol's
``orderTypes`` apply: the real exchangeInfo files have no STOP_LOSS / TAKE_PROFIT (market)
orders, so tests that need them patch ``orderTypes`` into a copy of the file.
"""
from __future__ import annotations

import asyncio
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from tests.support.emulator.faults import Faults
from tests.support.emulator.server import Emulator, RequestRecord

SHARED_DATA = Path(__file__).resolve().parents[4] / "shared" / "data"
DEFAULT_OHLCV_DIR = SHARED_DATA / "ohlcv"
DEFAULT_EXCHANGE_INFO = SHARED_DATA / "raw" / "Binance_API" / "exchangeInfoCompact.json.gz"
DEFAULT_START_MS = 1_614_556_800_000  # 2021-03-01T00:00:00Z, inside the recorded 1h range

# What a ccxt binance client needs to talk to the emulator (besides redirect_ccxt):
# only spot markets, so load_markets asks /api/v3/exchangeInfo and nothing of fapi/dapi/eapi.
CCXT_OPTIONS: dict[str, Any] = {"fetchMarkets": {"types": ["spot"]}}


def redirect_ccxt(exchange: Any, base_url: str) -> None:
    """Point every REST base URL of a ccxt exchange at ``base_url``, keeping each path."""
    base = base_url.rstrip("/")
    api = exchange.urls["api"]
    for key, url in list(api.items()):
        if isinstance(url, str):
            api[key] = base + urlsplit(url).path


@contextmanager
def running_emulator(host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> Iterator[Emulator]:
    """Run an Emulator in a background thread with its own event loop; ``emu.url`` is set."""
    kwargs.setdefault("ohlcv_dir", DEFAULT_OHLCV_DIR)
    kwargs.setdefault("exchange_info", DEFAULT_EXCHANGE_INFO)
    kwargs.setdefault("start_ms", DEFAULT_START_MS)
    emu = Emulator(**kwargs)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="emulator-loop", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(emu.start(host, port), loop).result(timeout=30)
        yield emu
    finally:
        try:
            asyncio.run_coroutine_threadsafe(emu.stop(), loop).result(timeout=30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()


__all__ = ["CCXT_OPTIONS", "DEFAULT_EXCHANGE_INFO", "DEFAULT_OHLCV_DIR", "DEFAULT_START_MS", "Emulator", "Faults",
           "RequestRecord", "redirect_ccxt", "running_emulator"]
