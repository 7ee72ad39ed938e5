"""What the engine loop tells its observers: the report of each cycle and the hooks it calls.

The service (systemd notify, health, the dashboard), the backtest and the demo observe the loop
through these; none of them reaches into it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from core.config import Config
from core.models import ScanResult


@dataclass
class CycleReport:
    """What one cycle did; feeds the display, STATUS= line and `status`."""

    ts_ms: int
    scan: ScanResult
    equity: Decimal
    cash: Decimal
    open_positions: int
    entries: list[str] = field(default_factory=list)
    exits: list[str] = field(default_factory=list)
    rejections: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # this cycle's refusals by check
    halts: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    prices: dict[str, float] = field(default_factory=dict)  # the cycle's marks (open positions, candidates)


class Hooks:
    """Optional observers of the loop (systemd notify, health, display); all no-ops here."""

    async def on_ready(self, report: CycleReport) -> None: ...

    async def on_cycle(self, report: CycleReport) -> None: ...

    async def on_reloading(self) -> None: ...

    async def on_reloaded(self, ok: bool, cfg: Config) -> None:
        """After a reload attempt; ``cfg`` is the configuration now in force."""

    async def on_stopping(self) -> None: ...

    def progress(self) -> None:
        """The loop completed a step (or is waiting on purpose): feeds the watchdog."""

    def interval_factor(self) -> float:
        """Health can slow the loop down (hot, low memory)."""
        return 1.0

    def entries_paused(self) -> str | None:
        """A reason to pause new entries (exits keep running), or None."""
        return None

    async def on_tick(self, engine) -> None:
        """Every monitor interval between scans (the service's manual command queue); ``engine``:
        the running ``core.engine.loop.Engine``."""

