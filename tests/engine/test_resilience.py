"""The service loop rides out outages and bad replies instead of dying (wall-clock mode)."""
import asyncio
import logging
from dataclasses import replace

from core.clock import WallClock
from core.config import Config
from core.engine.loop import Engine
from core.exchange.gateway import TemporaryError
from core.trading.paper import PaperExecutor
from core.exchange.setup import replay_setup
from core.store.state import Store
from tests.conftest import SAMPLE


class FollowClock(WallClock):
    """A wall-type clock (so the engine runs in service mode) reading the replay's time."""

    def __init__(self, virtual):
        self.virtual = virtual

    def now_ms(self):
        return self.virtual.now_ms()


class Flaky:
    """Wraps a gateway; ``fail`` maps a method name to the exceptions its next calls raise."""

    def __init__(self, inner, **fail):
        self.inner, self.fail = inner, {k: list(v) for k, v in fail.items()}

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name not in self.fail:
            return attr

        async def call(*a, **kw):
            if self.fail[name]:
                raise self.fail[name].pop(0)
            return await attr(*a, **kw)
        return call


def _cfg():
    cfg = Config()
    return replace(cfg, scanner=replace(cfg.scanner, min_opportunity_score=0.3, interval_s=1))


async def _engine_run(tmp_path, gateway_wrap=None, cycles=3, loader=None, reload_first=False):
    cfg = _cfg()
    gw, vclock, _ = replay_setup(cfg, SAMPLE)
    gateway = gateway_wrap(gw) if gateway_wrap else gw
    async with Store.open(tmp_path / "p.db") as store:
        engine = Engine(cfg, gateway, store, FollowClock(vclock), config_loader=loader)
        engine.start_retry_s = 0.01
        if reload_first:
            engine.request_reload()

        async def advance():  # an hour of market per cycle, like the live service over a day
            while not engine.stopping:
                await asyncio.sleep(0.005)
                vclock.advance_to(vclock.now_ms() + 60_000)

        ticker = asyncio.create_task(advance())
        try:
            await engine.run(max_cycles=cycles, interval_s=0.01)
        finally:
            engine.request_stop()
            await ticker
        return engine, await store.positions()


def test_start_retries_through_an_outage(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    outage = [TemporaryError("connection refused")] * 3
    engine, _ = asyncio.run(_engine_run(tmp_path, lambda g: Flaky(g, load_markets=outage), cycles=1))
    assert engine.cycles == 1
    assert sum("start: connection refused; retrying" in r.message for r in caplog.records) == 3


def test_a_failed_cycle_is_logged_and_the_loop_goes_on(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    bad = [RuntimeError("odd reply")]
    engine, _ = asyncio.run(_engine_run(tmp_path, lambda g: Flaky(g, fetch_tickers=[TemporaryError("5xx")] + bad),
                                        cycles=3))
    assert engine.cycles == 3
    msgs = [r.message for r in caplog.records]
    assert any("cycle failed: 5xx; retrying next interval" in m for m in msgs)
    assert any("cycle failed unexpectedly" in m for m in msgs)


def test_unknown_equity_judges_no_halt_and_opens_nothing(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(PaperExecutor, "valuation_ok", property(lambda self: False))
    engine, positions = asyncio.run(_engine_run(tmp_path, cycles=3))
    assert positions == [] and engine.risk.halts == []
    assert any("equity unknown" in r.message for r in caplog.records)


def test_reload_that_needs_a_restart_is_rejected(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    changed = replace(_cfg(), scanner=replace(_cfg().scanner, timeframes=("1h",), confirm_timeframe=None))
    engine, _ = asyncio.run(_engine_run(tmp_path, cycles=1, loader=lambda: changed, reload_first=True))
    assert engine.cfg.scanner.timeframes == ("1h", "4h")
    assert any("reload rejected" in r.message and "scanner.timeframes" in r.message for r in caplog.records)
