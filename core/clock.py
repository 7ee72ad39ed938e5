"""Clocks: the only thing besides the gateway that differs between live and replay."""
from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...

    async def sleep(self, seconds: float) -> None: ...


class WallClock:
    def now_ms(self) -> int:
        return int(time.time() * 1000)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class VirtualClock:
    """Time that moves only when told to; ``sleep`` advances it instantly."""

    def __init__(self, start_ms: int) -> None:
        self._now = int(start_ms)

    def now_ms(self) -> int:
        return self._now

    def advance_to(self, ts_ms: int) -> None:
        if ts_ms < self._now:
            raise ValueError("a virtual clock never goes backwards")
        self._now = int(ts_ms)

    async def sleep(self, seconds: float) -> None:
        self._now += int(round(max(0.0, seconds) * 1000))
        await asyncio.sleep(0)  # still yield, so cancellation and signals are seen
