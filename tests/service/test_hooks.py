"""What `pitrader run` adds around the engine: the STATUS= line and heap trimming."""
import asyncio
from decimal import Decimal

from core.config import Config

from core.secrets import Secrets
from core.engine.hooks import CycleReport
from core.models import ScanResult
from core.service.hooks import ServiceHooks, status_line


class _Store:
    async def set_state(self, *a, **kw):
        pass


def _report(equity="1004", halts=()):
    return CycleReport(1_620_000_000_000, ScanResult(126, 0, {}, 0.93), Decimal(equity), Decimal("500"), 2,
                       halts=list(halts))


def test_status_line_is_one_ascii_line():
    line = status_line(_report(), 8.2, Decimal("1000"))
    assert line == "126 pairs in 0.9s | 2 open | day +0.4% | next 8s"
    halted = status_line(_report("950", ["daily_loss: equity 950 is 5% below the day's start"]), 10, Decimal("1000"))
    assert "day -5.0% | HALT: daily_loss" in halted and halted.isascii() and "\n" not in halted


def test_heap_is_trimmed_after_every_cycle(tmp_path):
    hooks = ServiceHooks(Config(), tmp_path, _Store(), Secrets)
    calls = []
    hooks._trim = calls.append
    for _ in range(3):
        asyncio.run(hooks.on_cycle(_report()))
    assert calls == [0, 0, 0]
