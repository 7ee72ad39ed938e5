"""`pitrader warmup`: compile every numba kernel ahead of time into the on-disk cache.

install.sh runs it as the service user so the first scan after boot loads machine code from
``NUMBA_CACHE_DIR`` instead of compiling for tens of seconds on a Pi. Besides each indicator
on tiny 1-D and 2-D inputs, it runs one real scan (candle store -> scanner -> strategies)
over a few generated random-walk pairs, so exactly the signatures the service uses are cached.
The generated candles only exercise the code; nothing is traded or reported from them.
"""
from __future__ import annotations

import os
import time

NAME = "warmup"
HELP = "compile the numba kernels ahead of time into the cache (NUMBA_CACHE_DIR) and report the time"


def configure(p) -> None:
    p.add_argument("--defaults", action="store_true",
                   help="warm with the default strategies instead of the configured ones")


def warm_scan(cfg) -> int:
    """One scan over generated candles (3 pairs, the configured timeframes); returns pairs scanned."""
    import numpy as np

    from core.scan.candles import CandleStore
    from core.timeframes import TIMEFRAME_MS
    from core.scan.scanner import Scanner

    store = CandleStore(cfg.scanner.timeframes, cfg.scanner.candles)
    symbols = ["WARM1/USDT", "WARM2/USDT", "WARM3/USDT"]
    store.set_symbols(symbols)
    rng = np.random.default_rng(7)
    end = 1_700_000_000_000 - 1_700_000_000_000 % TIMEFRAME_MS["1d"]
    for tf in store.fetched_timeframes:
        step = TIMEFRAME_MS[tf]
        n = cfg.scanner.candles * 4
        ts = end - step * np.arange(n, 0, -1, dtype=np.float64)
        for k, sym in enumerate(symbols):
            close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
            open_ = np.r_[close[0], close[:-1]]
            high = np.maximum(open_, close) * 1.004
            low = np.minimum(open_, close) * 0.996
            volume = rng.uniform(1e3, 5e3, n)
            rows = np.column_stack([ts, open_, high, low, close, volume])
            store.append(sym, tf, rows[k * 10:])  # ragged rows: left padding is part of the real shape
    result = Scanner(cfg).scan(store, int(end))
    return result.pairs_scanned


def _kernel_stats() -> tuple[int, int, str | None]:
    """(signatures compiled now, signatures loaded from the cache, cache directory)."""
    import core.indicators as ind
    from numba.core.dispatcher import Dispatcher

    compiled = loaded = 0
    path = None
    for obj in vars(ind).values():
        if isinstance(obj, Dispatcher):
            stats = obj.stats
            compiled += sum(stats.cache_misses.values())
            loaded += sum(stats.cache_hits.values())
            path = path or stats.cache_path
    return compiled, loaded, path


def run(args, ctx) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from core.config import Config, ConfigError

    t0 = time.perf_counter()
    if args.defaults:
        cfg = Config()
    else:
        try:
            cfg = ctx.config()
        except ConfigError as exc:
            ctx.console.print(f"[yellow]warning[/]: {exc}; warming with the default settings", soft_wrap=True)
            cfg = Config()
    with Progress(TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=ctx.console, transient=False) as progress:
        task = progress.add_task("loading numba", total=None)
        import core.indicators as ind

        progress.update(task, total=len(ind.INDICATORS) + 1, description="compiling indicators")

        def step(name: str) -> None:
            progress.update(task, advance=1, description=f"compiled {name}")

        ind.warmup(step)
        progress.update(task, description="scanner (1h/4h, strategies)")
        warm_scan(cfg)
        progress.update(task, advance=1, description="done")
    compiled, loaded, path = _kernel_stats()
    elapsed = time.perf_counter() - t0
    note = "NUMBA_CACHE_DIR" if os.environ.get("NUMBA_CACHE_DIR") else "numba's default; NUMBA_CACHE_DIR overrides"
    ctx.console.print(f"[green]ok[/]: warmed in {elapsed:.1f} s: {compiled} kernel signatures compiled, "
                      f"{loaded} loaded from the cache", soft_wrap=True)
    ctx.console.print(f"cache: {path} ({note})", soft_wrap=True)
    return 0
