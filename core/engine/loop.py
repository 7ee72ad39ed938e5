"""The engine loop: scan -> rank -> risk -> execute -> exits, the same code live and in replay.

Only the gateway and the clock differ between modes. One cycle is one await-able unit of work;
a stop request (SIGINT/SIGTERM) is honoured between steps, never in the middle of an order, and
the store is flushed before the loop returns. With a wall clock, open positions are also
checked for exits every ``trading.monitor_interval_s`` between scans. Observers: ``hooks``;
manual control (pause, exclude, close): ``manual``.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from decimal import Decimal
from typing import Awaitable, Callable, TypeVar

from core.clock import Clock, VirtualClock
from core.config import Config, ConfigError
from core.engine.hooks import CycleReport, Hooks
from core.engine.manual import ManualControl
from core.trading.factory import make_executor
from core.trading.exits import candle_exit, exit_reason
from core.trading.stop_fill import resting_exit
from core.exchange.gateway import AuthenticationFailed, ExchangeGateway, GatewayError, NotSupported
from core.models import Market, ScanResult
from core.scan.pipeline import ScanPipeline
from core.trading.risk import Approval, RiskGate
from core.store.errors import StateDatabaseError, storage_fault
from core.store.state import Store

log = logging.getLogger("core.engine")  # one logger for the engine, whichever module speaks
T = TypeVar("T")

EQUITY_EVERY_MS = 60_000  # equity snapshots: at most one a minute
SUMMARY_EVERY_MS = 3_600_000  # an unchanged cycle summary is repeated at INFO once an hour (wall time)


def wall_ms() -> float:
    """Wall time for the journal's heartbeat: a replay's cycle is a market hour, not a real one."""
    return time.monotonic() * 1000


class Engine(ManualControl):
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
        self._wake = asyncio.Event()  # set by a stop or a reload request: ends a wait early
        self._reload = False
        self._started = False
        self._equity_ms = -EQUITY_EVERY_MS
        self._summary, self._summary_ms = "", 0
        self.storage_fault: str | None = None  # the state database cannot be written: entries paused
        self._paused: dict | None = None  # a manual pause: {"by", "since_ms"}
        self.excluded: dict[str, str] = {}  # runtime blacklist: symbol -> who excluded it
        # Held by the loop for each step (start, a cycle and its hooks, an exit check): an action from
        # another task (the Telegram remote) waits for it instead of racing the loop's own orders
        # and its store transactions on the shared connection.
        self._step = asyncio.Lock()

    # --- control ------------------------------------------------------------------------------
    def request_stop(self, why: str = "stop requested") -> None:
        if not self._stop.is_set():
            log.info("%s: finishing the current step, then stopping", why)
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        """Applied within a second between cycles (the wait is woken), at the next cycle otherwise."""
        self._reload = True
        self._wake.set()

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
        await self.load_manual_state()
        if self._paused is not None:
            log.warning("entries still paused by %s (since before the restart): `pitrader resume` allows them",
                        self._paused.get("by", "?"))
        await self.executor.start()
        self._started = True

    async def between_steps(self, action: Callable[[], Awaitable[T]]) -> T:
        """Run ``action()`` from another task while the loop is between steps (never inside a cycle,
        an exit check or a store transaction of the loop)."""
        async with self._step:
            return await action()

    # --- one cycle ----------------------------------------------------------------------------
    async def scan(self) -> ScanResult:
        return await self.pipeline.scan()

    async def prices(self, symbols: set[str]) -> dict[str, float]:
        """Last prices of ``symbols``; a symbol the exchange refuses does not blind the rest."""
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
            prices = await self.prices({p.symbol for p in positions})
        done = []
        now = self.clock.now_ms()
        for pos in positions:
            if self.risk.emergency:
                decision = ("emergency: " + "; ".join(self.risk.halts), prices.get(pos.symbol))
            elif self.replay and (candle := await self._last_candle(pos)) is not None:
                rules = self.cfg.exits(pos.strategy)
                decision = candle_exit(pos, candle, now, rules)
                decision = resting_exit(pos, candle, decision, rules)  # exchange-side stops, as live
            elif pos.symbol in prices:
                reason = exit_reason(pos, Decimal(str(prices[pos.symbol])), now, self.cfg.exits(pos.strategy))
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
        """Each candidate through the cheap policy checks first; only a survivor costs an order book."""
        paused = self.pause_reason()
        refusals = self.risk.refusals
        portfolio = None  # valued once, and again only after an entry changed it
        for opp in scan.opportunities:
            if self.stopping:
                break
            if paused:
                refusals.refuse(log, opp.symbol, "paused", "entries paused: %s", paused)
                continue
            if opp.symbol in self.excluded:
                refusals.refuse(log, opp.symbol, "excluded", "entry %s refused: excluded by %s", opp.symbol,
                                self.excluded[opp.symbol])
                continue
            market = self.markets.get(opp.symbol)
            if market is None:
                refusals.refuse(log, opp.symbol, "market", "entry %s rejected: market unknown to the exchange",
                                opp.symbol)
                continue
            if portfolio is None:
                portfolio = await self.executor.portfolio(prices)
            if await self.risk.precheck(opp, market, portfolio) is not None:
                continue
            try:
                book = await self._book(opp.symbol)
            except GatewayError as exc:
                refusals.refuse(log, opp.symbol, "book", "entry %s rejected: order book unavailable (%s)",
                                opp.symbol, exc)
                continue
            decision = await self.risk.evaluate(opp, market, book, portfolio)
            if not isinstance(decision, Approval):
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
        report.refused = dict(refusals.end_cycle())
        report.rejections = sum(report.refused.values())

    def _log_summary(self, report: CycleReport) -> None:
        """One line a cycle: at INFO when it says something new (or an hour of wall time after the last
        INFO one, so the journal shows the engine alive), else at DEBUG; the same line 8,640 times a day,
        or once per market hour of a replay, says nothing."""
        scan = report.scan
        refused = ", ".join(f"{k} {n}" for k, n in sorted(report.refused.items(), key=lambda kv: (-kv[1], kv[0])))
        text = (f"cycle: {scan.pairs_scanned} pairs ({scan.pairs_skipped} skipped), "
                f"{len(scan.opportunities)} opportunities, entries {len(report.entries)}, exits {len(report.exits)}, "
                f"positions {report.open_positions}/{self.cfg.risk.max_open_positions}, "
                f"refused {sum(report.refused.values())}" + (f" ({refused})" if refused else "")
                + (f"; halted: {', '.join(h.split(':', 1)[0] for h in report.halts)}" if report.halts else ""))
        now = wall_ms()
        fresh = text != self._summary or now - self._summary_ms >= SUMMARY_EVERY_MS
        if fresh:
            self._summary, self._summary_ms = text, now
        log.log(logging.INFO if fresh else logging.DEBUG, "%s", text)

    async def cycle(self) -> CycleReport:
        t0 = time.perf_counter()
        await self._apply_reload()
        self.markets = await self.gateway.load_markets()  # cached; the gateway refreshes hourly
        self.executor.update_markets(self.markets)
        scan = await self.scan()
        self.hooks.progress()
        now = self.clock.now_ms()
        open_syms = {p.symbol for p in self.executor.positions}
        prices = await self.prices(open_syms | {o.symbol for o in scan.opportunities})
        # replay: the candle that just closed already crossed its stops and targets (resting on the exchange
        # live); settle them before the marks the risk gate judges, or a candle that closed far below a stop
        # would count as a loss the stop prevented and could fire a halt that live would not
        exits = await self.check_exits(prices) if self.replay else []
        portfolio = await self.executor.portfolio(prices)
        valued = self.executor.valuation_ok
        if valued:
            for halt in await self.risk.on_equity(portfolio.equity, now):
                log.warning("halt: %s", halt)
        else:
            log.warning("equity unknown (no current balance): no halts judged and no new entries this cycle")
        report = CycleReport(now, scan, portfolio.equity, portfolio.cash, len(portfolio.positions))
        report.prices = prices
        judged = portfolio  # the equity curve records the marks the risk gate judged: one drawdown everywhere
        if not self.replay or self.risk.emergency:  # replay: this candle's exits are settled, a halt's are not
            exits += await self.check_exits(prices)
        report.exits = exits
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
            self.store.record_equity(now, judged.equity, judged.cash)
        await self.store.set_state("last_scan", {
            "ts_ms": now, "pairs_scanned": scan.pairs_scanned, "pairs_skipped": scan.pairs_skipped,
            "duration_s": round(scan.duration_s, 3),
            "opportunities": [{"symbol": o.symbol, "strategy": o.strategy, "score": round(o.score, 1)}
                              for o in scan.opportunities[:5]]})
        self.cycles += 1
        if self.cycles % 20 == 0:
            await self.store.flush()
        report.duration_s = time.perf_counter() - t0
        self._log_summary(report)
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
        """Wall-clock wait that ends early on a stop or reload request."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass
        if not self.stopping:
            self._wake.clear()

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
            if self._reload and not self.stopping:
                await self._apply_reload()  # SIGHUP: RELOADING=1 ... READY=1 now, not at the next cycle
            if self.stopping or time.monotonic() >= deadline:
                return
            try:
                async with self._step:
                    await self.check_exits()
                    await self.executor.poll()
                    await self.hooks.on_tick(self)
                self.hooks.progress()
            except GatewayError as exc:
                log.warning("exit monitor: %s (will retry)", exc)
            except Exception as exc:  # noqa: BLE001 - storage faults are ridden out, corruption stops
                if not self._storage_trouble(exc):
                    raise
                self.hooks.progress()  # the monitor is alive, only its writes fail
            self._check_credentials()

    def _storage_trouble(self, exc: BaseException) -> bool:
        """A database error during the run: a full disk or I/O errors pause entries (warned once,
        resumed by ``_storage_ok``) while the monitor keeps trying; corruption stops the service
        with ``StateDatabaseError`` (exit 74: restarting cannot mend a file). False: not storage."""
        kind = storage_fault(exc)
        if kind is None:
            return False
        if kind == "corrupt":
            raise StateDatabaseError(self.store.path, f"became unreadable while running ({exc})",
                                     "stop pitrader and restore a backup (pitrader backup list / restore; "
                                     "live: pitrader backup rebuild)") from exc
        if self.storage_fault is None:
            log.warning("state database %s cannot be written (%s): new entries paused; open positions are still "
                        "checked, and an exit is placed only once it can be recorded; free space on its file "
                        "system", self.store.path, exc)
        self.storage_fault = str(exc)
        return True

    def _storage_ok(self) -> None:
        """A cycle wrote its state: a storage fault is over."""
        if self.storage_fault is not None:
            self.storage_fault = None
            log.info("state database %s writable again: entries resume", self.store.path)

    def _check_credentials(self) -> None:
        """Keys the exchange refuses at start or again and again are a configuration error, even
        where a step logged the refusal and went on: stop (the CLI exits 78)."""
        refused = getattr(self.gateway, "credentials_refused", None)
        if refused is not None:
            raise refused

    async def _start_with_retry(self) -> None:
        """Markets and reconciliation, retried through outages: a Pi often boots before its
        network is up, and an exchange has maintenance windows."""
        delay = self.start_retry_s
        while not self.stopping:
            try:
                async with self._step:
                    await self.start()
                self._check_credentials()
                return
            except AuthenticationFailed:
                raise
            except Exception as exc:  # noqa: BLE001 - outages and a full disk are waited out
                if self.replay or not (isinstance(exc, (GatewayError, OSError)) or self._storage_trouble(exc)):
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
                async with self._step:
                    report = await self._step_cycle(first)
                first = first and report is None
                if max_cycles is not None and self.cycles >= max_cycles:
                    break
                base = interval_s if interval_s is not None else self.cfg.scanner.interval_s
                await self._sleep(base * self.hooks.interval_factor())
            return self.cycles
        finally:
            async with self._step:
                await self.hooks.on_stopping()
                try:
                    await self.store.flush()
                except Exception as exc:  # noqa: BLE001 - snapshots are cheap to lose; the first error matters
                    if storage_fault(exc) is None:
                        raise
                    log.warning("equity snapshots not saved at stop: %s", exc)
            log.info("engine stopped after %d cycles", self.cycles)

    async def _step_cycle(self, first: bool) -> CycleReport | None:
        """One cycle and its hooks (``on_ready`` after the first good one); None when it failed."""
        try:
            report = await self.cycle()
            self._check_credentials()
        except AuthenticationFailed:
            raise  # a configuration problem: retrying cannot help
        except Exception as exc:  # noqa: BLE001 - the appliance keeps watching its positions
            if self.replay:
                raise  # recorded data: a failure is a bug to see, not an outage to ride out
            if self._storage_trouble(exc):
                pass  # warned once; the monitor keeps going
            elif isinstance(exc, GatewayError):
                log.warning("cycle failed: %s; retrying next interval", exc)
            else:
                log.exception("cycle failed unexpectedly; retrying next interval")
            report = None
        if report is not None:
            self._storage_ok()
            if first:
                await self.hooks.on_ready(report)
            try:
                await self.hooks.on_cycle(report)
            except Exception as exc:  # noqa: BLE001 - the health record cannot be written
                if self.replay or not self._storage_trouble(exc):
                    raise
        return report
