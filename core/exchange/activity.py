"""Which exchange requests the process is waiting for right now (for the systemd watchdog).

A cycle that retries hung requests (10 s timeouts, three tries, for markets, universe and
prices in a row) makes no progress for minutes, yet the loop is alive: it is waiting on the
network, and every wait has a deadline. ``core.exchange.ratelimit.RequestGuard`` marks each
attempt here; the heartbeat keeps pinging while a request is in flight or one ended since its
previous look. A loop stuck anywhere else sends no request and misses its pings.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class NetworkWaits:
    in_flight: int = 0  # attempts sent and not ended
    ended: int = 0  # attempts ended (answered, failed or timed out) since the process started

    def begin(self) -> None:
        self.in_flight += 1

    def end(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        self.ended += 1

    def snapshot(self) -> tuple[int, int]:
        """``(in_flight, ended)``: compare ``ended`` with an earlier snapshot to see activity."""
        return self.in_flight, self.ended


NETWORK = NetworkWaits()  # one event loop per process, one exchange client: process-wide
