"""`pitrader scan --once [--json]`: one market scan, ranked opportunities, nothing traded."""
from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import replace
from datetime import datetime, timezone

from rich.table import Table  # noqa: F401  (render checks what fit_table returned)

NAME = "scan"
HELP = "scan the market and print ranked opportunities (never places orders)"


def configure(p) -> None:
    p.add_argument("--once", action="store_true", help="scan once and exit (default: repeat every scanner.interval_s)")
    p.add_argument("--json", action="store_true", help="machine-readable output (implies --once)")
    p.add_argument("--replay", metavar="DIR", help="scan recorded data instead of the exchange")
    p.add_argument("--at", metavar="ISO8601", help="with --replay: the moment to scan at (default: end of the data)")


def to_json(result) -> dict:
    return {"pairs_scanned": result.pairs_scanned, "pairs_skipped": result.pairs_skipped,
            "skipped": dict(sorted(result.skipped.items())), "duration_s": round(result.duration_s, 4),
            "opportunities": [{"symbol": o.symbol, "strategy": o.strategy, "side": o.side,
                               "score": round(o.score, 2), "price": o.price, "stop": o.stop,
                               "target": o.target, "reason": o.reason} for o in result.opportunities]}


def render(console, result) -> None:
    """The ranked table; never a cut number or symbol: the reason gets its own column when it fits,
    less important columns go at narrow widths, and a very narrow console gets one block per pair."""
    from core.service.tables import fit_table, num

    when = datetime.fromtimestamp(result.ts_ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    right = {"justify": "right"}
    cols = [("#", right), ("symbol", {}), ("strategy", {}), ("side", {}), ("score", right), ("price", right),
            ("stop", right), ("target", right)]
    rows = [[str(i), o.symbol, o.strategy, o.side, f"{o.score:.0f}", num(o.price), num(o.stop), num(o.target)]
            for i, o in enumerate(result.opportunities, 1)]
    title = f"{len(result.opportunities)} opportunities at {when}"
    table = None
    if console.width >= 140:
        table = fit_table(console, cols + [("reason", {})], [r + [o.reason] for r, o in
                                                            zip(rows, result.opportunities)],
                          title=title, wrap=("reason",))
        if not isinstance(table, Table) or len(table.columns) != len(cols) + 1:
            table = None
    if table is None:
        table = fit_table(console, cols, rows, drop=("side", "strategy", "target", "stop"), title=title)
    console.print(table)
    if not (isinstance(table, Table) and any(c.header == "reason" for c in table.columns)):
        for i, o in enumerate(result.opportunities, 1):
            console.print(f"  [bold]{i}.[/] {o.symbol}: {o.reason}", highlight=False)
    console.print(f"{result.pairs_scanned} pairs scanned, {result.pairs_skipped} skipped, "
                  f"{result.duration_s:.2f} s")
    for sym, why in sorted(result.skipped.items())[:20]:
        console.print(f"  [dim]skipped {sym}: {why}[/]", highlight=False)
    if len(result.skipped) > 20:
        console.print(f"  [dim]... and {len(result.skipped) - 20} more (see --json)[/]")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


async def _scan(args, ctx) -> int:
    from core.scan.pipeline import ScanPipeline
    from core.trading.pricing import gate_levels
    from core.exchange.setup import live_setup, replay_setup

    cfg = ctx.config()
    if args.replay:
        gateway, clock, end_ms = replay_setup(cfg, args.replay, warmup=0)
        at = end_ms
        if args.at:
            try:
                at = int(datetime.fromisoformat(args.at.replace("Z", "+00:00")).timestamp() * 1000)
            except ValueError:
                ctx.console.print(f"[red]--at: expected an ISO-8601 time such as 2021-05-01T12:00Z, got {args.at!r}")
                return 2
        if not gateway.start_ms < at <= end_ms:
            span = f"{_iso(gateway.start_ms)} .. {_iso(end_ms)}"
            where = "after the data ends" if at > end_ms else "before the first candle closes"
            print(f"pitrader scan: --at {args.at}: {where} (the data in {args.replay} covers {span})",
                  file=sys.stderr)
            return 2
        clock.advance_to(max(clock.now_ms(), at))
    else:
        gateway, clock = live_setup(cfg, ctx.secrets())
    try:
        pipeline = ScanPipeline(cfg, gateway, clock)
        while True:
            result = await pipeline.scan()
            # the stop and target the risk gate would use, not the strategy's raw ones (one rule for both)
            result = replace(result, opportunities=gate_levels(result.opportunities, await gateway.load_markets(),
                                                               cfg.trading))
            if args.json:
                print(json.dumps(to_json(result)))
            else:
                render(ctx.console, result)
            if args.once or args.json or args.replay:
                return 0
            await clock.sleep(cfg.scanner.interval_s)
    finally:
        await gateway.close()


def run(args, ctx) -> int:
    from core.commands._storage import require

    require(None)  # an unwritable numba cache: one line, exit 77
    return asyncio.run(_scan(args, ctx))
