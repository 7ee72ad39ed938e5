"""`pitrader backtest --data DIR`: the real engine over recorded candles, with a report.

Exit codes: 0 done; 2 bad arguments or data (unknown strategy, bad dates, unreadable CSV,
unknown --export type); 78 bad configuration; 70 the precomputed signals disagreed with the
real scanner on a verified cycle (a bug: please report it); 130 interrupted (Ctrl-C or SIGTERM; the
report, if any, covers the cycles that ran).
"""
from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

from core.exitcodes import EX_DATAERR, EX_INTERRUPTED, EX_SOFTWARE, EX_USAGE

NAME = "backtest"
HELP = "run the engine over recorded candles (paper, virtual clock) and report trades, PnL, drawdown"


def configure(p) -> None:
    p.add_argument("--data", metavar="DIR", required=True,
                   help="recorded OHLCV: DIR/<tf>/BASE_QUOTE.csv (what `pitrader download` writes) or a folder "
                        "of BASE_QUOTE.csv files of --timeframe")
    p.add_argument("--timeframe", metavar="TF", help="signal timeframe (default: scanner.timeframes[0]); its "
                   "confirmation timeframe is built from it (1h -> 4h, 5m -> 15m)")
    p.add_argument("--from", dest="start", metavar="DATE", help="first cycle, e.g. 2021-01-01 or 2021-01-01T12:00Z "
                   "(UTC; earlier candles still warm up the indicators; default: 300 candles into the data)")
    p.add_argument("--to", dest="end", metavar="DATE", help="last cycle (default: the last candle's close); "
                   "later candles are never read")
    p.add_argument("--strategies", metavar="A,B", help="run these strategies instead of strategies.enabled")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object (no progress, no page)")
    p.add_argument("--export", metavar="FILE", help="also write the report page as FILE.html or FILE.svg")
    p.add_argument("--verify", type=int, default=2, metavar="N",
                   help="re-check N cycles' signals against the real scanner (default 2; 0 skips)")
    p.add_argument("--html", metavar="FILE", help="write the report page (charts, baselines, every trade; one "
                   "self-contained file) to FILE; default: backtest-report.html in the state directory for a "
                   "terminal report, none with --json")
    p.add_argument("--no-html", action="store_true", help="do not write the report page")
    p.add_argument("--markets", metavar="FILE", help="exchange order rules (markets.json: minimum amount and "
                   "cost, steps) to apply; default: markets.json in or next to --data, else a warning")
    p.add_argument("--check-lookahead", action="store_true",
                   help="also prove no look-ahead: rebuild the signals with different future candles at 3 cut "
                        "points and require every earlier cycle's signals to stay the same (exit 70 if not)")
    p.add_argument("--baseline-seeds", type=int, default=None, metavar="N",
                   help="random-entry baselines: N seeds of each kind (random pairs, random timing) in worker "
                        "processes (default %d; 0: none, only buy-and-hold)" % _default_seeds())
    p.add_argument("--db", metavar="FILE", help="keep the backtest's database (orders, fills, positions, equity) "
                   "in FILE, replacing it; default: a scratch file, deleted")


def _default_seeds() -> int:
    from core.backtest.baseline import DEFAULT_SEEDS

    return DEFAULT_SEEDS


class _HaltFilter(logging.Filter):
    """Halts are events of the backtest and appear in its report, not as warnings on stderr."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("halt:")


HALT_FILTER = _HaltFilter()


class _RichProgress:
    """A phase line while preparing, then a bar over the cycles with the simulated date and equity."""

    def __init__(self, console, quote: str) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.quote = quote
        self.bar = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                            TimeRemainingColumn(), console=console, transient=True)
        self.task = self.bar.add_task("loading candles", total=None, info="")
        self.n = 0

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def phase(self, name: str) -> None:
        self.bar.update(self.task, description=name)

    def start_cycles(self, total: int) -> None:
        self.bar.update(self.task, description="backtest", total=total, completed=0)

    def cycle(self, ts_ms: int, equity, trades: int) -> None:
        from core.backtest.runner import iso

        self.n += 1
        if self.n % 25 == 0:  # redrawing is the costly part; 25 cycles is ~1 simulated day
            self.bar.update(self.task, completed=self.n,
                            info=f"{iso(ts_ms)}  equity {float(equity):,.2f} {self.quote}  trades {trades}")


def fail(code: int, message: str) -> int:
    print(f"pitrader backtest: {message}", file=sys.stderr)
    return code


def run(args, ctx) -> int:
    from core.backtest.runner import BacktestError, BacktestSpec, parse_date

    from core.commands._storage import require

    cfg = ctx.config_or_defaults()
    require(None)  # an unwritable numba cache: one line, exit 77
    if args.export and Path(args.export).suffix.lower() not in (".html", ".htm", ".svg"):
        return fail(EX_USAGE, f"--export {args.export}: expected a file name ending in .html or .svg")
    if args.verify < 0:
        return fail(EX_USAGE, "--verify: expected 0 or more cycles")
    seeds = _default_seeds() if args.baseline_seeds is None else args.baseline_seeds
    if seeds < 0:
        return fail(EX_USAGE, "--baseline-seeds: expected 0 or more seeds")
    try:
        spec = BacktestSpec(
            data=Path(args.data), timeframe=args.timeframe,
            start_ms=parse_date(args.start, "--from") if args.start else None,
            end_ms=parse_date(args.end, "--to") if args.end else None,
            strategies=tuple(s.strip() for s in args.strategies.split(",") if s.strip()) if args.strategies
            is not None else None,
            verify=args.verify, db=Path(args.db) if args.db else None,
            markets=Path(args.markets) if args.markets else None)
    except BacktestError as exc:
        return fail(EX_USAGE, str(exc))
    if not spec.data.is_dir():
        return fail(EX_DATAERR, f"--data {spec.data}: expected a directory of OHLCV CSV files")

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    engine_log = logging.getLogger("core.engine")
    engine_log.addFilter(HALT_FILTER)
    try:  # only for this run: a caller in the same process (tests, research) keeps its halt lines
        return _run(args, ctx, cfg, spec, seeds)
    finally:
        engine_log.removeFilter(HALT_FILTER)


def _run(args, ctx, cfg, spec, seeds: int) -> int:
    from core.backtest.report import export, render, stats_of, to_json
    from core.backtest.runner import BacktestError, iso, run_backtest
    from core.backtest.signals import SignalMismatch
    from core.exchange.replay import DataError

    show = not args.json and ctx.console.is_terminal
    try:
        if show:
            with _RichProgress(ctx.console, cfg.universe.quote) as ui:
                result = asyncio.run(run_backtest(cfg, spec, ui, install_signals=True))
        else:
            result = asyncio.run(run_backtest(cfg, spec, None, install_signals=True))
    except BacktestError as exc:
        return fail(EX_USAGE, str(exc))
    except DataError as exc:
        return fail(EX_DATAERR, f"data: {exc}")
    except SignalMismatch as exc:
        return fail(EX_SOFTWARE, f"internal error, results withheld: {exc}")
    stats = stats_of(result)
    lookahead = None
    if args.check_lookahead and not result.interrupted:
        from core.backtest import lookahead as la

        report = la.check(result.cfg, result.loaded, result.table)
        lookahead = {"ok": report.ok, "cuts": [iso(t) for t in report.cuts], "cycles": report.cycles,
                     "opportunities": report.opportunities, "problems": report.problems[:5]}
        if not report.ok:
            return fail(EX_SOFTWARE, "look-ahead: " + report.problems[0])
    bl = None
    if not result.interrupted:
        try:
            bl = _baselines(result, spec, seeds, show, ctx.console)
        except KeyboardInterrupt:
            print("pitrader backtest: interrupted while running the baselines", file=sys.stderr)
            return EX_INTERRUPTED
    baselines = bl.doc if bl is not None else None
    page = None if args.no_html else (Path(args.html) if args.html else
                                      None if args.json else ctx.state_dir / "backtest-report.html")
    if page is not None:
        from core.backtest import html

        try:
            if not args.html:
                page.parent.mkdir(parents=True, exist_ok=True)
            html.write(page, result, bl, stats)
        except OSError as exc:
            if args.html:
                return fail(EX_USAGE, f"--html {args.html}: cannot write ({exc.strerror or exc})")
            print(f"pitrader backtest: report page not written to {page} ({exc.strerror or exc})", file=sys.stderr)
            page = None
    if args.export:
        try:
            export(Path(args.export), result, stats, baselines)
        except OSError as exc:
            return fail(EX_USAGE, f"--export {args.export}: cannot write ({exc.strerror or exc})")
    if args.json:
        doc = to_json(result, stats, baselines)
        if lookahead is not None:
            doc["lookahead"] = lookahead
        print(json.dumps(doc))
    else:
        render(ctx.console, result, stats, baselines=baselines)
        if lookahead is not None:
            ctx.console.print(f"[dim]look-ahead check: the signals of {lookahead['cycles']:,} cycles before "
                              f"{len(lookahead['cuts'])} cut points ({lookahead['opportunities']:,} opportunities) "
                              "stayed the same when every later candle changed[/]")
        if args.export:
            ctx.console.print(f"[dim]report written to {args.export}[/]")
        if page is not None:
            ctx.console.print(f"[dim]report page: {page}[/]")
    if result.interrupted:  # a partial report must not pass for a finished one in scripts
        print("pitrader backtest: interrupted: the report covers the cycles that ran", file=sys.stderr)
        return EX_INTERRUPTED
    return 0


def _baselines(result, spec, seeds: int, show: bool, console):
    """Buy-and-hold and the random baselines (``core.backtest.baseline``), with a progress line."""
    from core.backtest.baseline import MODES, compute

    from concurrent.futures.process import BrokenProcessPool

    if not len(result.loaded.times):
        return None
    try:
        if not show or seeds == 0:
            return compute(result, spec, seeds)
        with console.status(f"random baselines: 0/{seeds * len(MODES)} runs") as status:
            def done(n: int, total: int) -> None:
                status.update(f"random baselines: {n}/{total} runs ({seeds} seeds x {', '.join(MODES)})")

            return compute(result, spec, seeds, on_done=done)
    except (BrokenProcessPool, OSError) as exc:  # a worker died (memory, a vanished file): keep the report
        print(f"pitrader backtest: random baselines failed ({exc}); reporting buy-and-hold only", file=sys.stderr)
        return compute(result, spec, 0)
