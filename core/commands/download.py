"""`pitrader download --pairs A/B,C/D --timeframe 1h --since DATE DIR`: candle history for backtests.

Writes DIR/<timeframe>/BASE_QUOTE.csv through the exchange gateway (``exchange.id`` /
``exchange.api_url`` from config.json; public data, no API keys used). Running it again resumes
after the last candle of each file. Exit codes: 0 all pairs done; 1 a pair failed or the exchange
banned us (the message says what to do; what was fetched is kept); 2 bad arguments; 78 bad config.
"""
from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from core.exitcodes import EX_USAGE

NAME = "download"
HELP = "download candle history from the exchange into CSV files for `pitrader backtest` (resumable)"


def configure(p) -> None:
    p.add_argument("dir", metavar="DIR", help="output folder; files go to DIR/<timeframe>/BASE_QUOTE.csv")
    p.add_argument("--pairs", required=True, metavar="A/B,C/D", help="pairs to fetch, e.g. BTC/USDT,ETH/USDT")
    p.add_argument("--timeframe", default="1h", metavar="TF", help="candle timeframe (default 1h)")
    p.add_argument("--since", required=True, metavar="DATE", help="first candle, e.g. 2021-01-01 (UTC); an "
                   "existing file continues after its last candle instead")
    p.add_argument("--until", metavar="DATE", help="stop at candles closed by DATE (default: the newest closed one)")
    p.add_argument("--page", type=int, default=1000, metavar="N",
                   help="candles per request and per committed chunk (default 1000, Binance's maximum)")


class _Bar:
    def __init__(self, console, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("[bold]download[/]"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                                 transient=True)
        self.task = self.progress.add_task("candles", total=total or None, info="")

    def rows(self, symbol: str, n: int, last_ms: int) -> None:
        from core.backtest.runner import iso

        self.progress.update(self.task, advance=n, info=f"{symbol} {iso(last_ms)}")

    def wait(self, why: str, seconds: float) -> None:
        self.progress.update(self.task, info=f"[yellow]{why[:60]}: waiting {seconds:.0f} s[/]")


def run(args, ctx) -> int:
    from core.backtest.runner import BacktestError, iso, parse_date
    from core.secrets import Secrets
    from core.exchange.download import Banned, csv_path, download, last_timestamp, parse_pairs
    from core.timeframes import TIMEFRAME_MS, timeframe_ms
    from core.exchange.setup import live_setup

    def fail(code: int, message: str) -> int:
        print(f"pitrader download: {message}", file=sys.stderr)
        return code

    cfg = ctx.config_or_defaults()
    try:
        pairs = parse_pairs(args.pairs)
        since = parse_date(args.since, "--since")
        until = parse_date(args.until, "--until") if args.until else None
    except (ValueError, BacktestError) as exc:
        return fail(EX_USAGE, str(exc))
    if args.timeframe not in TIMEFRAME_MS:
        return fail(EX_USAGE, f"--timeframe: expected one of {', '.join(TIMEFRAME_MS)}, got {args.timeframe!r}")
    if not 1 <= args.page <= 1000:
        return fail(EX_USAGE, f"--page: expected 1 to 1000 candles, got {args.page}")
    if until is not None and until <= since:
        return fail(EX_USAGE, "--until: expected a date after --since")
    root = Path(args.dir)
    if root.exists() and not root.is_dir():
        return fail(EX_USAGE, f"{root}: exists and is not a directory")

    tf_ms = timeframe_ms(args.timeframe)
    end = until or int(time.time() * 1000)
    total = 0
    for sym in pairs:
        path = csv_path(root, sym, args.timeframe)
        try:
            start = max(since, (last_timestamp(path) or since - tf_ms) + tf_ms) if path.exists() else since
        except Exception:  # reported per pair by the download itself
            start = since
        total += max(0, (end - start) // tf_ms)

    async def go(bar):
        gateway, _clock = live_setup(cfg, Secrets())  # public candles: never send keys for this
        try:
            return await download(gateway, pairs, args.timeframe, since, root, until_ms=until, page=args.page,
                                  concurrency=min(4, cfg.exchange.max_concurrency),
                                  on_rows=bar.rows if bar else None, on_wait=bar.wait if bar else None)
        finally:
            await gateway.close()

    console = ctx.console
    try:
        if console.is_terminal:
            bar = _Bar(console, total)
            with bar.progress:
                results = asyncio.run(go(bar))
        else:
            results = asyncio.run(go(None))
    except Banned as exc:
        return fail(1, str(exc))

    failed = 0
    for r in results:
        where = f"{r.path} ({'+' if r.had is not None else ''}{r.added} candles"
        last = f", last {iso(r.last_ms)}" if r.last_ms is not None else ""
        if r.error:
            failed += 1
            kept = f"\n  kept {where}{last}); the same command resumes from there" if r.last_ms is not None else ""
            console.print(f"[red]{r.symbol}: failed[/]: {r.error}{kept}")
        else:
            console.print(f"{r.symbol}: {where}{last})" + (" [dim]up to date[/]" if not r.added and r.had else ""))
    return 1 if failed else 0
