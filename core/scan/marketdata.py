"""Keeps the candle store current: one backfill per pair, then only the candles that are new.

A cycle asks the exchange only for candles that can exist: when a pair's next candle has not
closed yet (by our clock) nothing is requested, so between candle closes a cycle costs no
requests at all, and right after one it costs one small request per pair and fetched
timeframe. Timeframes the candle store derives (4h from 1h) are never requested.

Backfills page *backwards* from the newest candle (no ``since``), so they do not depend on
our clock agreeing with the exchange's; incremental requests start right after the newest
stored candle, so a clock that runs ahead costs requests, never data.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import numpy as np

from core.scan.candles import CandleStore
from core.clock import Clock
from core.config import Config
from core.exchange.gateway import GatewayError
from core.timeframes import timeframe_ms

log = logging.getLogger(__name__)

PAGE = 1000  # most candles one request returns (Binance klines limit)


@dataclass(slots=True)
class RefreshStats:
    """What the last ``refresh`` did (for status lines and the benchmark)."""

    pairs: int = 0
    requests: int = 0
    candles: int = 0  # appended to the store
    skipped: int = 0
    duration_s: float = 0.0


class MarketData:
    def __init__(self, gateway, candles: CandleStore, cfg: Config, clock: Clock) -> None:
        self.gateway = gateway
        self.candles = candles
        self.clock = clock
        self.concurrency = cfg.exchange.max_concurrency
        self.last = RefreshStats()
        self._requests = 0

    def update_config(self, cfg: Config) -> None:
        self.concurrency = cfg.exchange.max_concurrency

    def history_needed(self, timeframe: str) -> int:
        """Candles to backfill for a fetched timeframe: the store's capacity, times the ratio of
        any timeframe built from it (a full 500-candle 4h buffer takes 2000 1h candles)."""
        tf_ms = timeframe_ms(timeframe)
        ratio = max([timeframe_ms(d) // tf_ms for d in self.candles.timeframes
                     if self.candles.derived_from(d) == timeframe] or [1])
        return self.candles.capacity * max(1, ratio)

    async def refresh(self, symbols: list[str]) -> dict[str, str]:
        """Bring every pair of ``symbols`` up to date; returns ``{symbol: reason}`` for the pairs
        whose data could not be fetched this cycle. One pair's failure never fails the cycle."""
        t0 = time.perf_counter()
        symbols = list(symbols)
        if self.candles.symbols != symbols:
            self.candles.set_symbols(symbols)
        timeframes = [tf for tf in self.candles.timeframes if self.candles.derived_from(tf) is None]
        sem = asyncio.Semaphore(self.concurrency)
        now = self.clock.now_ms()
        self._requests = 0
        jobs = [(sym, tf) for sym in symbols for tf in timeframes]
        results = await asyncio.gather(*(self._update(sym, tf, now, sem) for sym, tf in jobs),
                                       return_exceptions=True)
        skipped: dict[str, str] = {}
        appended = 0
        for (sym, tf), res in zip(jobs, results):
            if isinstance(res, int):
                appended += res
                continue
            if isinstance(res, asyncio.CancelledError):
                raise res
            if isinstance(res, GatewayError):
                reason = str(res)
            else:  # a bug or corrupt data: loud in the log, but still only this pair is lost
                log.error("%s %s: unexpected %s", sym, tf, type(res).__name__, exc_info=res)
                reason = f"internal error ({type(res).__name__}: {str(res)[:80]})"
            skipped.setdefault(sym, f"{tf}: {reason}" if len(timeframes) > 1 else reason)
        self.last = RefreshStats(len(symbols), self._requests, appended, len(skipped), time.perf_counter() - t0)
        if skipped:
            log.info("candles: %d of %d pairs skipped this cycle (e.g. %s: %s)", len(skipped), len(symbols),
                     *next(iter(skipped.items())))
        return skipped

    async def _fetch(self, sem: asyncio.Semaphore, symbol: str, tf: str, since: int | None, limit: int) -> np.ndarray:
        async with sem:
            self._requests += 1
            return await self.gateway.fetch_ohlcv(symbol, tf, since, limit)

    async def _update(self, symbol: str, tf: str, now: int, sem: asyncio.Semaphore) -> int:
        tf_ms = timeframe_ms(tf)
        need = self.history_needed(tf)
        last = self.candles.last_ts(symbol, tf)
        if last is None:
            return self.candles.append(symbol, tf, await self._backfill(sem, symbol, tf, tf_ms, need))
        since = last + tf_ms
        if since + tf_ms > now:
            return 0  # the next candle has not closed yet
        appended = 0
        for _ in range(need // PAGE + 2):
            missing = (now - since) // tf_ms  # closed since `since`, by our clock
            limit = int(min(max(missing, 1) + 1, PAGE))  # +1: room for the exchange's open candle
            rows = await self._fetch(sem, symbol, tf, since, limit)
            appended += self.candles.append(symbol, tf, rows)
            if len(rows) < limit - 1 or len(rows) == 0:
                break
            since = int(rows[-1, 0]) + tf_ms
            if since + tf_ms > now:
                break
        return appended

    async def _backfill(self, sem: asyncio.Semaphore, symbol: str, tf: str, tf_ms: int, need: int) -> np.ndarray:
        """The newest ``need`` closed candles: the latest page, then older pages before it.

        Exchange outages leave gaps, so a page ending at the previous one's start usually holds a
        few candles less than asked; a shortfall within 2 % of ``need`` is not worth a request."""
        first_limit = min(need + 1, PAGE)
        pages = [await self._fetch(sem, symbol, tf, None, first_limit)]
        have = len(pages[0])
        exhausted = have < first_limit - 1  # the pair's whole history fit in one page
        enough = need - need // 50
        while have < enough and not exhausted:
            oldest = int(pages[-1][0, 0])
            k = min(PAGE, need - have)
            since = oldest - k * tf_ms
            page = await self._fetch(sem, symbol, tf, since, k)
            page = page[page[:, 0] < oldest] if len(page) else page
            if len(page) == 0:
                break  # listing start (or a gap longer than a page: older data is of no use)
            pages.append(page)
            have += len(page)
            # Nothing at `since` means the listing start or an outage gap: only an empty page tells
            # them apart (a gap must not cut the window short, or a jump across it goes unseen).
        rows = pages[0] if len(pages) == 1 else np.concatenate(pages[::-1])
        return rows[-need:] if len(rows) > need else rows
