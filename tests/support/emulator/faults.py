"""Fault injection switches and Binance-style request-weight accounting.

Every switch can be flipped at runtime (``emu.faults.latency_s = 0.08``). Random faults are
drawn from the emulator's seeded RNG, one draw per request, in the order 429, 5xx, timeout,
reset, malformed (their rates add up; at most one fault per request).

- ``latency_s``: every request waits this long before it is handled (concurrently).
- ``error_5xx_rate``: 500 ``{-1000}``, 502 (HTML), 503 ``{-1001}`` or 504 (HTML), seeded.
- ``rate_429``: 429 ``{-1003}`` with ``Retry-After: retry_after_s``.
- ``timeout_rate``: the reply is held ``hang_s`` seconds (set the client timeout below it).
- ``reset_rate``: the TCP connection is reset (RST) instead of answering.
- ``malformed_rate``: a 200 whose JSON body is cut short at a (seeded) random point.
- ``clock_skew_ms``: the server clock (``/api/v3/time``, recvWindow checks) runs this far ahead.
- ``ban_418``: every request gets 418 with ``Retry-After: retry_after_s``.
- ``symbols``: when set, the random faults only hit symbol requests (klines, depth, single
  ticker, avgPrice) for these symbols ("BTCUSDT" or "BTC/USDT"); latency, skew and the ban
  still apply everywhere.
- ``after_rate``: on order placement/cancel, the share of 5xx/timeout/reset faults that strike
  *after* the order was applied (the order exists although the client saw an error).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields

FAULT_KINDS = ("429", "5xx", "timeout", "reset", "malformed")


@dataclass
class Faults:
    latency_s: float = 0.0
    error_5xx_rate: float = 0.0
    rate_429: float = 0.0
    timeout_rate: float = 0.0
    reset_rate: float = 0.0
    malformed_rate: float = 0.0
    clock_skew_ms: int = 0
    symbols: set[str] | None = None
    ban_418: bool = False
    hang_s: float = 30.0
    retry_after_s: int = 1
    after_rate: float = 0.5

    def clear(self) -> None:
        """Back to a healthy exchange."""
        for f in fields(self):
            setattr(self, f.name, f.default)

    def applies_to(self, symbol: str | None) -> bool:
        if self.symbols is None:
            return True
        if symbol is None:
            return False
        wanted = {s.replace("/", "").upper() for s in self.symbols}
        return symbol.upper() in wanted

    def draw(self, rng: random.Random) -> str | None:
        rates = (self.rate_429, self.error_5xx_rate, self.timeout_rate, self.reset_rate, self.malformed_rate)
        if not any(rates):
            return None
        r = rng.random()
        acc = 0.0
        for kind, rate in zip(FAULT_KINDS, rates):
            acc += rate
            if r < acc:
                return kind
        return None


class WeightMeter:
    """Request weight per fixed one-minute window (wall clock), 429 over the limit, 418 after.

    A client that keeps sending while limited, more than ``ban_grace_ms`` after its first 429
    of the window, is banned for ``ban_s`` seconds (418 with Retry-After), like Binance's
    automated IP ban (which starts at 2 minutes).
    """

    def __init__(self, limit: int, ban_s: int = 120, ban_grace_ms: int = 1_000) -> None:
        self.limit = limit
        self.ban_s = ban_s
        self.ban_grace_ms = ban_grace_ms
        self.window = -1
        self.used = 0
        self.max_used = 0  # the highest per-minute weight ever reached
        self.first_429_ms: int | None = None
        self.banned_until = 0

    def _roll(self, wall_ms: int) -> None:
        window = wall_ms // 60_000
        if window != self.window:
            self.window, self.used, self.first_429_ms = window, 0, None

    def add(self, weight: int, wall_ms: int) -> int:
        self._roll(wall_ms)
        self.used += weight
        self.max_used = max(self.max_used, self.used)
        return self.used

    def current(self, wall_ms: int) -> int:
        self._roll(wall_ms)
        return self.used

    def over_limit(self) -> bool:
        return self.used > self.limit

    def window_retry_after_s(self, wall_ms: int) -> int:
        return max(1, math.ceil(((self.window + 1) * 60_000 - wall_ms) / 1000))

    def note_limited(self, wall_ms: int) -> bool:
        """Record a 429; returns True when the client has earned a ban."""
        if self.first_429_ms is None:
            self.first_429_ms = wall_ms
            return False
        if wall_ms - self.first_429_ms > self.ban_grace_ms:
            self.banned_until = wall_ms + self.ban_s * 1000
            return True
        return False

    def banned(self, wall_ms: int) -> bool:
        return wall_ms < self.banned_until


class SapiMeter(WeightMeter):
    """sapi weight is counted separately (X-SAPI-USED-IP-WEIGHT-1M) and never limited here."""

    def __init__(self) -> None:
        super().__init__(limit=10**9)
