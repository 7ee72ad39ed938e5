"""The engine loop: scan -> rank -> risk -> execute -> exits, the same code live and in replay.

Only the gateway and the clock differ between modes. One cycle is one await-able unit of work;
a stop request (SIGINT/SIGTERM) is honoured between steps, never in the middle of an order, and
the store is flushed before the loop returns. With a wall clock, open positions are also
checked for exits every ``trading.monitor_interval_s`` between scans.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable

from core.clock import Clock, VirtualClock
from core.config import Config, ConfigError
from core.trading.factory import make_executor
from core.trading.exits import candle_exit, exit_reason
from core.exchange.gateway import AuthenticationFailed, ExchangeGateway, GatewayError, NotSupported
from core.models import Market, ScanResult
from core.scan.pipeline import ScanPipeline
from core.trading.risk import Approval, RiskGate
from core.store.state import Store

log = logging.getLogger(__name__)

EQUITY_EVERY_MS = 60_000  # equity snapshots: at most one a minute


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
    halts: list[str] = field(default_factory=list)
    duration_s: float = 0.0


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


class Engine:
    start_retry_s = 5.0  # first wait after a failed start; doubles up to 5 minutes

    def __init__(self, cfg: Config, gateway: ExchangeGateway, store: Store, clock: Clock, *,
                 hooks: Hooks | None = None, config_loader: Callable[[], Config] | None = None,
                 pipeline: ScanPipeline | None = None) -> None:
        self.cfg = cfg
        self.gateway = gateway
        self.store = store
        self.clock = clock
        self.hooks = hooks or Hooks()
        self.config_loader = config_loader
        self.replay = isinstance(clock, VirtualClock)
        # Backtests inject a pipeline that serves precomputed signals; everything after it is shared.
        self.pipeline = pipeline or ScanPipeline(cfg, gateway, clock)
        self.risk = RiskGate(cfg, store, clock)
        self.executor = make_executor(cfg, store, gateway, clock)
        self.markets: dict[str, Market] = {}
        self.cycles = 0
        self.last_report: CycleReport | None = None
        self._stop = asyncio.Event()
        self._reload = False
        self._started = False
        self._equity_ms = -EQUITY_EVERY_MS

    # --- control ------------------------------------------------------------------------------
    def request_stop(self, why: str = "stop requested") -> None:
        if not self._stop.is_set():
            log.info("%s: finishing the current step, then stopping", why)
        self._stop.set()

    def request_reload(self) -> None:
        self._reload = True

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    async def start(self) -> None:
        if self._started:
            return
        self.markets = await self.gateway.load_markets()
        await self.risk.load()
        await self.executor.start()
        self._started = True

    # --- one cycle ----------------------------------------------------------------------------
    async def scan(self) -> ScanResult:
        return await self.pipeline.scan()

    async def _prices(self, symbols: set[str]) -> dict[str, float]:
        if not symbols:
            return {}
        try:
            tickers = await self.gateway.fetch_tickers(sorted(symbols))
        except GatewayError as exc:
            if exc.retryable:
                raise
            # one bad symbol (delisted: the exchange refuses the whole batch) must not blind the rest
            tickers = {}
            for sym in sorted(symbols):
                try:
                    tickers.update(await self.gateway.fetch_tickers([sym]))
                except GatewayError as one:
                    log.warning("no price for %s: %s", sym, one)
        return {s: t.last for s, t in tickers.items() if t.last and t.last > 0}

    async def _book(self, symbol: str):
        try:
            return await self.gateway.fetch_order_book(symbol)
        except NotSupported:
            return None  # replay: the risk gate skips book checks and says so

    async def check_exits(self, prices: dict[str, float] | None = None) -> list[str]:
        """Close positions whose stop, target, trail, time limit or an emergency halt says so."""
        # the executor's own objects: the trailing-stop high they carry survives between checks
        positions = [p for p in self.executor.positions if p.status == "open"]
        if not positions:
            return []
        if prices is None:
            prices = await self._prices({p.symbol for p in positions})
        done = []
        now = self.clock.now_ms()
        for pos in positions:
            if self.risk.emergency:
                decision = ("emergency: " + "; ".join(self.risk.halts), prices.get(pos.symbol))
            elif self.replay and (candle := await self._last_candle(pos)) is not None:
                decision = candle_exit(pos, candle, now, self.cfg.trading)
            elif pos.symbol in prices:
                reason = exit_reason(pos, Decimal(str(prices[pos.symbol])), now, self.cfg.trading)
                decision = (reason, prices[pos.symbol]) if reason else None
            else:
                log.warning("no price for open position %s #%s: exit check skipped this time", pos.symbol, pos.id)
                continue
            if decision is None or decision[1] is None:
                continue
            reason, price = decision[0], float(decision[1])
            log.info("exit %s #%s at ~%s: %s", pos.symbol, pos.id, price, reason)
            await self.executor.close_position(pos, reason, price)
            self.risk.on_exit(pos.symbol, now)
            done.append(f"{pos.symbol} {reason}")
        return done

    async def _last_candle(self, pos) -> tuple[Decimal, Decimal, Decimal, Decimal] | None:
        """Replay: the candle that just closed, if the position was open for all of it."""
        rows = await self.gateway.fetch_ohlcv(pos.symbol, self.cfg.scanner.timeframes[0], limit=1)
        if not len(rows) or rows[-1, 0] < pos.opened_ms:
            return None  # opened after it began (or a data gap): judge by the close instead
        return tuple(Decimal(repr(float(v))) for v in rows[-1, 1:5])  # type: ignore[return-value]

    async def _enter(self, scan: ScanResult, prices: dict[str, float], report: CycleReport) -> None:
        paused = self.hooks.entries_paused()
        portfolio = None  # valued once, and again only after an entry changed it
        for opp in scan.opportunities:
            if self.stopping:
                break
            if paused:
                log.info("entry %s skipped: %s", opp.symbol, paused)
                report.rejections += 1
                continue
            market = self.markets.get(opp.symbol)
            if market is None:
                log.info("entry %s rejected: market unknown to the exchange", opp.symbol)
                report.rejections += 1
                continue
            try:
                book = await self._book(opp.symbol)
            except GatewayError as exc:
                log.info("entry %s rejected: order book unavailable (%s)", opp.symbol, exc)
                report.rejections += 1
                continue
            if portfolio is None:
                portfolio = await self.executor.portfolio(prices)
            decision = await self.risk.evaluate(opp, market, book, portfolio)
            if not isinstance(decision, Approval):
                report.rejections += 1
                continue
            log.info("entry %s %s: approved %s @ ~%s (stop %s, target %s): %s [%s %.0f]", opp.side, opp.symbol,
                     decision.amount, decision.price, decision.stop, decision.target, decision.reason,
                     opp.strategy, opp.score)
            pos = await self.executor.open_position(opp, decision, book)
            portfolio = None
            if pos is not None:
                report.entries.append(f"{opp.symbol} {opp.strategy} {opp.score:.0f}")
            else:  # refused by the exchange: cool the pair down instead of retrying every cycle
                self.risk.on_exit(opp.symbol, self.clock.now_ms())

    async def cycle(self) -> CycleReport:
        t0 = time.perf_counter()
        await self._apply_reload()
        self.markets = await self.gateway.load_markets()  # cached; the gateway refreshes hourly
        self.executor.update_markets(self.markets)
        scan = await self.scan()
        self.hooks.progress()
        now = self.clock.now_ms()
        open_syms = {p.symbol for p in self.executor.positions}
        prices = await self._prices(open_syms | {o.symbol for o in scan.opportunities})
        portfolio = await self.executor.portfolio(prices)
        valued = self.executor.valuation_ok
        if valued:
            for halt in await self.risk.on_equity(portfolio.equity, now):
                log.warning("halt: %s", halt)
        else:
            log.warning("equity unknown (no current balance): no halts judged and no new entries this cycle")
        report = CycleReport(now, scan, portfolio.equity, portfolio.cash, len(portfolio.positions))
        report.exits = await self.check_exits(prices)
        self.hooks.progress()
        if valued and not self.stopping:
            await self._enter(scan, prices, report)
            self.hooks.progress()
        await self.executor.poll()
        portfolio = await self.executor.portfolio(prices)
        report.equity, report.cash, report.open_positions = portfolio.equity, portfolio.cash, len(portfolio.positions)
        report.halts = list(self.risk.halts)
        if now - self._equity_ms >= EQUITY_EVERY_MS:  # a row a minute, not a row a cycle, for months
            self._equity_ms = now
            self.store.record_equity(now, portfolio.equity, portfolio.cash)
        await self.store.set_state("last_scan", {
            "ts_ms": now, "pairs_scanned": scan.pairs_scanned, "pairs_skipped": scan.pairs_skipped,
            "duration_s": round(scan.duration_s, 3),
            "opportunities": [{"symbol": o.symbol, "strategy": o.strategy, "score": round(o.score, 1)}
                              for o in scan.opportunities[:5]]})
        self.cycles += 1
        if self.cycles % 20 == 0:
            await self.store.flush()
        report.duration_s = time.perf_counter() - t0
        self.last_report = report
        return report

    # --- reload -------------------------------------------------------------------------------
    async def _apply_reload(self) -> None:
        if not self._reload:
            return
        self._reload = False
        if self.config_loader is None:
            log.warning("reload requested but this run has no config file to re-read")
            return
        await self.hooks.on_reloading()
        try:
            new = self.config_loader()
        except ConfigError as exc:
            log.error("reload rejected, keeping the running configuration: %s", exc)
            await self.hooks.on_reloaded(False, self.cfg)
            return
        old = self.cfg
        fixed = {"mode": (new.mode, old.mode), "exchange": (new.exchange, old.exchange),
                 "universe.quote": (new.universe.quote, old.universe.quote),
                 "scanner.timeframes": (new.scanner.timeframes, old.scanner.timeframes),
                 "scanner.candles": (new.scanner.candles, old.scanner.candles)}
        changed = [k for k, (a, b) in fixed.items() if a != b]
        if changed:
            log.error("reload rejected, keeping the running configuration: %s need a restart "
                      "(systemctl restart pitrader)", ", ".join(changed))
            await self.hooks.on_reloaded(False, self.cfg)
            return
        self.cfg = new
        self.pipeline.update_config(new)
        self.risk.update_config(new)
        self.executor.update_config(new)
        log.info("configuration reloaded from %s; open positions untouched", new.source)
        await self.hooks.on_reloaded(True, new)

    # --- the loop -----------------------------------------------------------------------------
    async def _wait_for_stop(self, seconds: float) -> None:
        """Wall-clock wait that ends early on a stop request."""
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking early on stop; with a wall clock, watch exits meanwhile."""
        if self.replay:
            await self.clock.sleep(seconds)
            return
        deadline = time.monotonic() + seconds
        while not self.stopping:
            self.hooks.progress()  # waiting on purpose is progress; a hung step is not
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await self._wait_for_stop(min(left, self.cfg.trading.monitor_interval_s))
            if self.stopping or time.monotonic() >= deadline:
                return
            try:
                await self.check_exits()
                await self.executor.poll()
                self.hooks.progress()
            except GatewayError as exc:
                log.warning("exit monitor: %s (will retry)", exc)

    async def _start_with_retry(self) -> None:
        """Markets and reconciliation, retried through outages: a Pi often boots before its
        network is up, and an exchange has maintenance windows."""
        delay = self.start_retry_s
        while not self.stopping:
            try:
                await self.start()
                return
            except AuthenticationFailed:
                raise
            except (GatewayError, OSError) as exc:
                if self.replay:
                    raise
                log.warning("start: %s; retrying in %.0f s", exc, delay)
                self.hooks.progress()
                await self._wait_for_stop(delay)  # nothing to watch yet: just wait
                delay = min(delay * 2, 300.0)

    async def run(self, *, max_cycles: int | None = None, until_ms: int | None = None,
                  interval_s: float | None = None) -> int:
        """Loop until stopped, ``max_cycles`` done or the clock passes ``until_ms``; returns cycles run."""
        try:
            await self._start_with_retry()
            first = True
            while not self.stopping:
                if until_ms is not None and self.clock.now_ms() > until_ms:
                    break
                try:
                    report = await self.cycle()
                except AuthenticationFailed:
                    raise  # a configuration problem: retrying cannot help
                except Exception as exc:  # noqa: BLE001 - the appliance keeps watching its positions
                    if self.replay:
                        raise  # recorded data: a failure is a bug to see, not an outage to ride out
                    if isinstance(exc, GatewayError):
                        log.warning("cycle failed: %s; retrying next interval", exc)
                    else:
                        log.exception("cycle failed unexpectedly; retrying next interval")
                    report = None
                if report is not None:
                    if first:
                        await self.hooks.on_ready(report)
                        first = False
                    await self.hooks.on_cycle(report)
                if max_cycles is not None and self.cycles >= max_cycles:
                    break
                base = interval_s if interval_s is not None else self.cfg.scanner.interval_s
                await self._sleep(base * self.hooks.interval_factor())
            return self.cycles
        finally:
            await self.hooks.on_stopping()
            await self.store.flush()
            log.info("engine stopped after %d cycles", self.cycles)
