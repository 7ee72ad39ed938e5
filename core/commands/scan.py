"""`pitrader scan --once [--json]`: one market scan, ranked opportunities, nothing traded."""
from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

from rich.table import Table

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
    """The ranked table; reasons get their own column on wide consoles, a list below otherwise."""
    when = datetime.fromtimestamp(result.ts_ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    wide = console.width >= 140
    t = Table(title=f"{len(result.opportunities)} opportunities at {when}", title_justify="left")
    cols = ["#", "symbol", "strategy", "side", "score", "price", "stop", "target"] + (["reason"] if wide else [])
    for col in cols:
        t.add_column(col, justify="right" if col in ("#", "score", "price", "stop", "target") else "left",
                     no_wrap=col != "reason", overflow="fold")
    for i, o in enumerate(result.opportunities, 1):
        t.add_row(str(i), o.symbol, o.strategy, o.side, f"{o.score:.0f}", f"{o.price:.5g}", f"{o.stop:.5g}",
                  f"{o.target:.5g}", *([o.reason] if wide else []))
    console.print(t)
    if not wide:
        for i, o in enumerate(result.opportunities, 1):
            console.print(f"  [bold]{i}.[/] {o.symbol}: {o.reason}", highlight=False)
    console.print(f"{result.pairs_scanned} pairs scanned, {result.pairs_skipped} skipped, "
                  f"{result.duration_s:.2f} s")
    for sym, why in sorted(result.skipped.items())[:20]:
        console.print(f"  [dim]skipped {sym}: {why}[/]", highlight=False)
    if len(result.skipped) > 20:
        console.print(f"  [dim]... and {len(result.skipped) - 20} more (see --json)[/]")


async def _scan(args, ctx) -> int:
    from core.scan.pipeline import ScanPipeline
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
        clock.advance_to(max(clock.now_ms(), at))
    else:
        gateway, clock = live_setup(cfg, ctx.secrets())
    try:
        pipeline = ScanPipeline(cfg, gateway, clock)
        while True:
            result = await pipeline.scan()
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
    return asyncio.run(_scan(args, ctx))
