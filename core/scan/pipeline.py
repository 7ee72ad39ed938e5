"""The market-data half of a cycle: universe -> candles -> scanner. Shared by the engine and `scan`."""
from __future__ import annotations

import time

from core.scan.candles import CandleStore
from core.clock import Clock
from core.config import Config
from core.exchange.gateway import ExchangeGateway
from core.scan.marketdata import MarketData
from core.models import ScanResult
from core.scan.scanner import Scanner
from core.scan.universe import Universe


class ScanPipeline:
    def __init__(self, cfg: Config, gateway: ExchangeGateway, clock: Clock) -> None:
        self.clock = clock
        self.candles = CandleStore(cfg.scanner.timeframes, cfg.scanner.candles)
        self.universe = Universe(gateway, cfg, clock)
        self.marketdata = MarketData(gateway, self.candles, cfg, clock)
        self.scanner = Scanner(cfg)

    def update_config(self, cfg: Config) -> None:
        self.universe.update_config(cfg)
        self.marketdata.update_config(cfg)
        self.scanner.update_config(cfg)

    async def scan(self) -> ScanResult:
        """One scan; pairs whose data failed are reported in ``skipped``, never fatal."""
        t0 = time.perf_counter()
        symbols = await self.universe.symbols()
        self.candles.set_symbols(symbols)
        skipped = await self.marketdata.refresh(symbols)
        result = self.scanner.scan(self.candles, self.clock.now_ms())
        for sym, why in skipped.items():
            result.skipped.setdefault(sym, why)
        result.pairs_skipped = len(result.skipped)
        result.pairs_scanned = len(symbols) - result.pairs_skipped
        result.duration_s = time.perf_counter() - t0
        result.ts_ms = self.clock.now_ms()
        return result
