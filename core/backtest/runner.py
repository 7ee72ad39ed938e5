"""Backtest: the real engine over recorded candles on a virtual clock, as fast as the machine allows.

Nothing is re-implemented for the backtest: ``core.engine.loop.Engine`` runs its normal cycle --
scan, risk gate, paper executor, exits, store and fills ledger -- over ``ReplayGateway`` (which
only shows candles closed by the virtual clock). Three things make it fast, none of which
changes a decision:

- the scan half is precomputed (``core.backtest.signals``): the scanner's window is defined as
  each pair's whole history, under which precomputed and cycle-by-cycle signals are identical,
  and sampled cycles are re-checked against the real pipeline (``verify``);
- the store is the real schema on a scratch SQLite file driven in-line (``core.store.backtest``);
- the engine's per-cycle work is otherwise unchanged (one cycle per closed candle).

Time range: cycles run at every candle close from ``start`` to ``end``. By default the first
``REPLAY_WARMUP_CANDLES`` (as ``run --replay``) only feed the indicators; ``--from`` sets the
first cycle instead, the history before it still counts as warm-up. Candles after ``end`` are
never loaded. Positions still open at the end are sold at the last close through the paper
executor (exit reason ``backtest_end``) so every trade is realised in the report.

Deterministic: the same data, config and range give the same trades, equity and report; only
wall-clock figures (``duration_s``) differ between runs.
"""
from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import numpy as np

from core.scan.candles import DERIVABLE
from core.clock import VirtualClock
from core.config import Config
from core.timeframes import TIMEFRAME_MS, timeframe_ms
from core.models import Position
from core.exchange.replay import DataError, ReplayGateway
from core.exchange.setup import REPLAY_WARMUP_CANDLES
from core.backtest.memory import release_memory

log = logging.getLogger(__name__)

END_REASON = "backtest_end"


class BacktestError(ValueError):
    """A backtest request that cannot run (bad range, unknown strategy, ...): one line for the user."""


# --- request -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BacktestSpec:
    data: Path
    timeframe: str | None = None  # signal timeframe; None: scanner.timeframes[0]
    start_ms: int | None = None  # first cycle (default: REPLAY_WARMUP_CANDLES candles in)
    end_ms: int | None = None  # last cycle (default: the close of the last candle)
    strategies: tuple[str, ...] | None = None  # overrides strategies.enabled
    verify: int = 2  # cycles re-checked against the real scan pipeline
    db: Path | None = None  # keep the backtest's database here (replaced if present)
    markets: Path | None = None  # exchange order rules (default: markets.json in or next to the data folder)


def parse_date(text: str, what: str) -> int:
    """``2021-03-01``, ``2021-03-01T12:00``, ``...Z`` or ``...+00:00`` -> epoch ms (naive = UTC)."""
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BacktestError(f"{what}: expected a date such as 2021-03-01 or 2021-03-01T12:00Z, got {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def backtest_config(cfg: Config, timeframe: str | None, strategies: tuple[str, ...] | None) -> Config:
    """The run's config: paper mode, the signal timeframe and strategy selection applied."""
    from strategies import registry

    cfg = replace(cfg, mode="paper")
    if strategies is not None:
        names = registry.available()
        unknown = [s for s in strategies if s not in names]
        if unknown or not strategies:
            raise BacktestError(f"--strategies: unknown strategy {unknown[0]!r} (installed: {', '.join(names)})"
                                if unknown else f"--strategies: expected one or more of {', '.join(names)}")
        if len(set(strategies)) != len(strategies):
            raise BacktestError("--strategies: each strategy once, please")
        cfg = replace(cfg, strategies=replace(cfg.strategies, enabled=tuple(strategies)))
    sc = cfg.scanner
    if timeframe is not None and timeframe != sc.timeframes[0]:
        if timeframe not in TIMEFRAME_MS:
            raise BacktestError(f"--timeframe: expected one of {', '.join(TIMEFRAME_MS)}, got {timeframe!r}")
        higher = {src: tf for tf, src in DERIVABLE.items()}.get(timeframe)
        wants_higher = sc.confirm_timeframe is not None or len(sc.timeframes) > 1
        tfs = (timeframe, higher) if higher and wants_higher else (timeframe,)
        confirm = higher if higher and sc.confirm_timeframe is not None else None
        cfg = replace(cfg, scanner=replace(sc, timeframes=tfs, confirm_timeframe=confirm))
    from core.scan.scanner import Scanner

    scanner = Scanner(cfg)
    if scanner.higher_tf is not None and scanner.need_higher and DERIVABLE.get(scanner.higher_tf) != scanner.signal_tf:
        raise BacktestError(f"the backtest builds the higher timeframe from the signal candles ({', '.join(f'{v}->{k}' for k, v in DERIVABLE.items())}); "
                            f"{scanner.higher_tf} cannot be built from {scanner.signal_tf} "
                            "(set scanner.timeframes / scanner.confirm_timeframe accordingly)")
    return cfg


def data_folder(data: Path, timeframe: str) -> Path:
    """``DIR/<tf>/`` when it exists (the download layout), else ``DIR`` itself (flat CSVs of ``tf``)."""
    sub = Path(data) / timeframe
    return sub if sub.is_dir() else Path(data)


# --- result --------------------------------------------------------------------------------------

@dataclass
class BacktestResult:
    cfg: Config
    data: Path
    timeframe: str
    pairs: int
    candles: int
    cycles: int
    start_ms: int
    end_ms: int
    closed: list[Position]
    curve: list[tuple[int, Decimal]]
    signals: int
    rejections: dict[str, int]
    closed_at_end: int
    verified: list[int]
    interrupted: bool
    halts: list[tuple[int, str]] = field(default_factory=list)  # (time raised, text), in order
    timings: dict[str, float] = field(default_factory=dict)
    halt_cycles: dict[str, int] = field(default_factory=dict)  # cycles that ended under each kind of halt
    halted_at_end: tuple[str, ...] = ()  # kinds of halt standing after the last cycle
    loaded: "Loaded | None" = field(default=None, repr=False)  # what baselines re-run over
    table: object = field(default=None, repr=False)  # the signal table served to the engine

    @property
    def duration_s(self) -> float:
        return sum(self.timings.values())


class Progress:
    """Callbacks a front end may implement; all optional."""

    def phase(self, name: str) -> None: ...

    def start_cycles(self, total: int) -> None: ...

    def cycle(self, ts_ms: int, equity: Decimal, trades: int) -> None: ...


# --- the run -------------------------------------------------------------------------------------

@dataclass
class Loaded:
    """The candles and cycles of a backtest, loaded once: a signal table or a baseline runs over them."""

    cfg: Config
    folder: Path
    timeframe: str
    gateway: ReplayGateway
    rows: dict[str, np.ndarray]
    markets: dict
    times: np.ndarray
    end: int


async def load(cfg: Config, spec: BacktestSpec, ui: Progress | None = None) -> Loaded:
    """The run's config, the replay gateway and the cycle times (candles after ``end`` never loaded)."""
    ui = ui or Progress()
    cfg = backtest_config(cfg, spec.timeframe, spec.strategies)
    tf = cfg.scanner.timeframes[0]
    tf_ms = timeframe_ms(tf)
    ui.phase("loading candles")
    folder = data_folder(spec.data, tf)
    gateway = ReplayGateway(folder, VirtualClock(0), timeframe=tf)
    if tf not in gateway.data:
        raise DataError(f"{folder}: no {tf} candles (found {', '.join(sorted(gateway.data))}); use --timeframe")
    if gateway.base_timeframe != tf:  # tickers (prices) come from the shortest timeframe in the folder
        raise DataError(f"{folder}: holds {gateway.base_timeframe} candles besides {tf}; point --data at the {tf} folder")
    first_open, last_close = gateway.start_ms, gateway.end_ms
    start = spec.start_ms if spec.start_ms is not None else first_open + REPLAY_WARMUP_CANDLES * tf_ms
    start = max(start, first_open + tf_ms)
    start = -(-start // tf_ms) * tf_ms  # cycles fall on candle closes
    end = min(spec.end_ms if spec.end_ms is not None else last_close, last_close)
    end = end // tf_ms * tf_ms
    if end < start:
        raise BacktestError(f"no candle closes between {iso(start)} and {iso(end)} "
                            f"(the data covers {iso(first_open)} .. {iso(last_close)})")
    # never read past the end (views: candles are sorted by time)
    rows = {s: a[:np.searchsorted(a[:, 0], end - tf_ms, side="right")] for s, a in gateway.data[tf].items()}
    if spec.markets is not None:  # an explicit rules file replaces the one found next to the data
        from core.exchange.replay import _markets_from_file

        if not Path(spec.markets).is_file():
            raise DataError(f"--markets {spec.markets}: no such file")
        gateway._markets = _markets_from_file(Path(spec.markets), sorted(gateway.data[tf]))
        gateway.markets_source = str(spec.markets)
    markets = await gateway.load_markets()
    times = np.arange(start, end + 1, tf_ms, dtype=np.int64)
    return Loaded(cfg, folder, tf, gateway, rows, markets, times, end)


async def run_backtest(cfg: Config, spec: BacktestSpec, progress: Progress | None = None,
                       install_signals: bool = False) -> BacktestResult:
    """Run the backtest (see the module docstring)."""
    from core.backtest.signals import SignalTable

    ui = progress or Progress()
    t0 = time.perf_counter()
    loaded = await load(cfg, spec, ui)
    timings = {"load": time.perf_counter() - t0}
    release_memory()

    t1 = time.perf_counter()
    ui.phase("precomputing signals")
    table = SignalTable(loaded.cfg, loaded.rows, loaded.markets, loaded.times,
                        progress=lambda what: ui.phase(f"precomputing signals: {what}"))
    release_memory()
    timings["signals"] = time.perf_counter() - t1
    return await simulate(loaded, table, spec.db, spec.verify, ui, install_signals, timings)


async def simulate(loaded: Loaded, table, db: Path | None = None, verify: int = 0, progress: Progress | None = None,
                   install_signals: bool = False, timings: dict[str, float] | None = None,
                   settle_when_halted: bool = False) -> BacktestResult:
    """The engine over ``table``'s scans (a ``SignalTable`` or anything serving ``index`` and
    ``result(i)`` the same way, e.g. a random baseline), on a fresh virtual clock.

    ``settle_when_halted``: once a drawdown halt without a cooling-off stands (nothing in a backtest
    lifts it) and no position is open, the account is cash that nothing can change any more: the
    run stops there and the equity curve is continued flat to the end. Trades and equity equal the full run's; only the
    cycle, signal and rejection counts stop early (the baselines use it, never the strategy's run)."""
    from core.backtest.signals import PrecomputedPipeline, reference_check
    from core.store.backtest import backtest_store
    from core.engine.hooks import Hooks
    from core.engine.loop import Engine
    from core.trading.stats import trades_of

    ui = progress or Progress()
    timings = dict(timings or {})
    cfg, gateway, times, end = loaded.cfg, loaded.gateway, loaded.times, loaded.end
    tf_ms = timeframe_ms(loaded.timeframe)
    clock = VirtualClock(0)
    sample = _verify_sample(table, verify)
    verified: list[int] = []
    if sample:
        # Checked before the engine runs, not at the cycle: the real pipeline's full-history scan
        # is the run's largest allocation and must not stack on the engine's; a scan served at
        # cycle i is fixed once the table exists, so the verdict is the same. A cycle counts as
        # verified when the engine reaches it (an interrupted run lists only those it served).
        ui.phase("checking signals against the real scanner")
        t_check = time.perf_counter()
        check_clock = VirtualClock(0)
        gateway.clock = check_clock
        for i in sorted(sample):
            check_clock.advance_to(int(times[i]))
            await reference_check(cfg, gateway, check_clock, table, i, table.result(i))
            release_memory()
        timings["verify"] = time.perf_counter() - t_check

    async def check(i, result):
        if i in sample:
            verified.append(int(table.times[i]))

    gateway.clock = clock  # the gateway holds no other state: one loaded gateway serves many runs
    t2 = time.perf_counter()
    signals = 0
    halts: list[tuple[int, str]] = []
    settled: list = []  # (time, equity) where a halted, empty account was left alone
    halt_cycles: dict[str, int] = {}  # cycles that ended under each kind of halt
    clock.advance_to(int(times[0]))
    ui.start_cycles(len(times))
    async with backtest_store(db) as store:

        class BacktestHooks(Hooks):
            trades = 0
            active: set[str] = set()

            async def on_cycle(self, report) -> None:
                nonlocal signals
                signals += len(report.scan.opportunities)
                self.trades += len(report.exits)
                names = {h.split(":", 1)[0] for h in report.halts}
                halts.extend((report.ts_ms, h) for h in report.halts if h.split(":", 1)[0] not in self.active)
                self.active = names
                ui.cycle(report.ts_ms, report.equity, self.trades)
                for name in names:
                    halt_cycles[name] = halt_cycles.get(name, 0) + 1
                if (settle_when_halted and "drawdown" in names and report.open_positions == 0 and not settled
                        and engine.risk.halt_details.get("drawdown", {}).get("until_ms") is None):
                    settled.append((report.ts_ms, report.equity))
                    engine.request_stop("backtest: halted with no positions; the rest is cash")

        hooks = BacktestHooks()
        engine = Engine(cfg, gateway, store, clock, hooks=hooks,
                        pipeline=PrecomputedPipeline(table, clock, check if sample else None))
        if install_signals:
            engine.install_signal_handlers()
        await engine.run(max_cycles=len(times), until_ms=end, interval_s=tf_ms / 1000)
        interrupted = engine.stopping and not settled
        closed_at_end = await _close_all(engine, store, clock)
        closed = await store.positions("closed")
        curve = await store.equity_curve()
    if settled:
        ts, equity = settled[0]
        curve = [c for c in curve if c[0] <= ts] + [(int(t), equity) for t in times[times > ts].tolist()]
        halt_cycles["drawdown"] += int((times > ts).sum())  # a permanent halt lasts to the end
    timings["engine"] = time.perf_counter() - t2
    sig = getattr(table, "sig", None)
    return BacktestResult(
        cfg=cfg, data=loaded.folder, timeframe=loaded.timeframe, pairs=len(table.symbols),
        candles=int(sig.n.sum()) if sig is not None else sum(len(r) for r in loaded.rows.values()),
        cycles=len(times) if settled else engine.cycles, start_ms=int(times[0]),
        end_ms=clock.now_ms() if interrupted else end,
        closed=trades_of(closed), curve=curve, signals=signals,
        rejections=dict(sorted(collections.Counter(engine.risk.rejections).items())),
        closed_at_end=closed_at_end, verified=verified, interrupted=interrupted, timings=timings, halts=halts,
        loaded=loaded, table=table, halt_cycles=halt_cycles, halted_at_end=tuple(sorted(hooks.active)))


def _verify_sample(table, n: int) -> set[int]:
    """Cycles to re-check: evenly spread over the cycles that have signals (else over all)."""
    if n <= 0 or not len(table.times):
        return set()
    pool = np.flatnonzero((table.opp_at >= 0).any(axis=0))
    if not len(pool):
        pool = np.arange(len(table.times))
    picks = np.linspace(0, len(pool) - 1, num=min(n, len(pool))).round().astype(int)
    return {int(pool[j]) for j in picks}


async def _close_all(engine, store, clock) -> int:
    """Sell what is still open at the last close (paper executor), then record the final equity."""
    positions = [p for p in await store.positions("open")]
    if not positions:
        return 0
    tickers = await engine.gateway.fetch_tickers(sorted({p.symbol for p in positions}))
    prices = {s: t.last for s, t in tickers.items()}
    n = 0
    for pos in positions:
        price = prices.get(pos.symbol)
        if price is None:
            log.warning("backtest end: no price for %s #%s; left open", pos.symbol, pos.id)
            continue
        await engine.executor.close_position(pos, END_REASON, price)
        n += 1
    portfolio = await engine.executor.portfolio(prices)
    store.record_equity(clock.now_ms(), portfolio.equity, portfolio.cash)
    await store.flush()
    return n


def drawdown_halt(result: BacktestResult) -> int | None:
    """When the drawdown halt -- the one that stops new entries for good -- was raised, if it was."""
    return next((ts for ts, text in result.halts if text.startswith("drawdown")), None)


def exit_reasons(closed: list[Position]) -> dict[str, int]:
    """Trades per exit kind (``emergency: <halt text>`` counts as ``emergency``)."""
    kinds = (p.exit_reason.split(":", 1)[0] if p.exit_reason else "unknown" for p in closed)
    return dict(sorted(collections.Counter(kinds).items()))
