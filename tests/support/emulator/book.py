"""A synthetic but plausible order book around the last close, on the symbol's tick/step grid.

The recorded data has candles only, so the book is made up, deterministically: the same
(seed, symbol, reference candle) always gives the same book, at any requested depth (each
array comes from its own seeded generator, so a deeper book extends a shallower one).

Shape: the relative spread shrinks with liquidity (``0.1 / sqrt(hourly quote volume)``,
capped at 50 bp, at least one tick); levels are 1-3 "gap units" apart (half a spread);
each level holds about 0.2 % of the hourly quote volume, log-normally scattered and growing
slowly with depth, never less than the minimum lot. Our own fills do not deplete it.

A book is keyed by (symbol, reference candle, centre price): the matching engine also asks for
books centred where a stop order triggered inside a candle (``Emulator.book_at``).
"""
from __future__ import annotations

import math
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np

FALLBACK_UNIT = Decimal("0.00000001")
LEVEL_SHARE = 0.002  # share of the hourly quote volume resting at one level
MAX_SPREAD = 0.005


def _rng(seed: int, symbol: str, ref_ts: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(symbol.encode()), ref_ts // 1000, stream])


@dataclass(eq=False)
class Book:
    symbol: str
    ref_ts: int
    tick: Decimal
    step: Decimal
    bid0: int  # best bid in ticks
    ask0: int
    gap: int  # gap unit in ticks
    level_qty: float  # mean level size in base units
    min_steps: int
    seed: int
    _levels: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    _json: dict[int, str] = field(default_factory=dict, repr=False)

    def _side(self, side: str, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """(price ticks, quantity steps) of the first ``depth`` levels; side is "bids" or "asks"."""
        have = self._levels.get(side)
        if have is not None and len(have[0]) >= depth:
            return have[0][:depth], have[1][:depth]
        n = max(depth, 100)
        stream = 1 if side == "bids" else 2
        gaps = self.gap * _rng(self.seed, self.symbol, self.ref_ts, stream).integers(1, 4, size=n - 1)
        offsets = np.concatenate(([0], np.cumsum(gaps)))
        sizes = _rng(self.seed, self.symbol, self.ref_ts, stream + 2).lognormal(0.0, 0.5, size=n)
        qty = self.level_qty * sizes * (1.0 + 0.02 * np.arange(n))
        steps = np.maximum(self.min_steps, np.floor(qty / float(self.step))).astype(np.int64)
        if side == "bids":
            ticks = self.bid0 - offsets
            keep = ticks > 0
            ticks, steps = ticks[keep], steps[keep]
        else:
            ticks = self.ask0 + offsets
        self._levels[side] = (ticks, steps)
        return ticks[:depth], steps[:depth]

    def levels(self, side: str, depth: int) -> list[tuple[Decimal, Decimal]]:
        ticks, steps = self._side(side, depth)
        return [(Decimal(int(t)) * self.tick, Decimal(int(s)) * self.step) for t, s in zip(ticks, steps)]

    def top(self) -> tuple[tuple[Decimal, Decimal], tuple[Decimal, Decimal]]:
        return self.levels("bids", 1)[0], self.levels("asks", 1)[0]

    def depth_json(self, limit: int, update_id: int) -> str:
        text = self._json.get(limit)
        if text is None:
            sides = []
            for side in ("bids", "asks"):
                rows = ",".join(f'["{p:.8f}","{q:.8f}"]' for p, q in self.levels(side, limit))
                sides.append(f'"{side}":[{rows}]')
            text = self._json[limit] = ",".join(sides) + "}"
        return f'{{"lastUpdateId":{update_id},' + text


class BookMaker:
    """Builds and caches books; thread-safe."""

    def __init__(self, seed: int, capacity: int = 512) -> None:
        self.seed = seed
        self._cache: OrderedDict[tuple[str, int, float], Book] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def book(self, symbol: str, ref_ts: int, close: float, hourly_quote_volume: float, tick: Decimal,
             step: Decimal, min_qty: Decimal) -> Book:
        key = (symbol, ref_ts, close)
        with self._lock:
            book = self._cache.get(key)
            if book is not None:
                self._cache.move_to_end(key)
                return book
        tick = tick if tick > 0 else FALLBACK_UNIT
        step = step if step > 0 else FALLBACK_UNIT
        qv = max(hourly_quote_volume, 1_000.0)
        u = float(_rng(self.seed, symbol, ref_ts, 0).uniform(0.5, 1.5))
        spread_rel = min(MAX_SPREAD, 0.1 / math.sqrt(qv)) * u
        ftick = float(tick)
        spread = max(1, round(close * spread_rel / ftick))
        mid = max(1, round(close / ftick))
        bid0 = mid - (spread + 1) // 2
        if bid0 < 1:
            bid0 = 1
        ask0 = max(bid0 + spread, bid0 + 1)
        gap = max(1, round(close * spread_rel * 0.5 / ftick))
        book = Book(symbol, ref_ts, tick, step, bid0, ask0, gap, qv * LEVEL_SHARE / close,
                    max(1, math.ceil(min_qty / step)), self.seed)
        with self._lock:
            self._cache[key] = book
            if len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return book
