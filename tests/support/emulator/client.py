"""Driving an emulator from tests and benchmarks: the real ccxt client pointed at it, a clock that
follows its market time, and an emulator that fails the test when one of its handlers crashed (an
emulator bug, not a behaviour under test)."""
from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator, Iterator

import ccxt.async_support as ccxt

from tests.support.emulator import CCXT_OPTIONS, Emulator, redirect_ccxt, running_emulator


@contextlib.asynccontextmanager
async def binance(emu: Emulator, *, key: str | None = None, secret: str | None = None, timeout_ms: int = 10_000,
                  load_markets: bool = False, **options) -> AsyncIterator[ccxt.binance]:
    ex = ccxt.binance({"apiKey": emu.api_key if key is None else key,
                       "secret": emu.api_secret if secret is None else secret,
                       "enableRateLimit": False, "timeout": timeout_ms,
                       "options": {**CCXT_OPTIONS, **options}})
    redirect_ccxt(ex, emu.url)
    try:
        if load_markets:
            await ex.load_markets()
        yield ex
    finally:
        await ex.close()


class EmulatorClock:
    """pitrader's clock following the emulator's market time (its candles are from the past)."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu

    def now_ms(self) -> int:
        return self.emu.now_ms

    async def sleep(self, s: float) -> None:
        await asyncio.sleep(s)


@contextlib.contextmanager
def checked(**kwargs) -> Iterator[Emulator]:
    """running_emulator that also fails the test if any handler crashed."""
    with running_emulator(**kwargs) as e:
        yield e
    assert e.internal_errors == []
