"""`pitrader close SYMBOL|--all`: sell open positions now (their exchange-side stops are cancelled first)."""
from __future__ import annotations

NAME = "close"
HELP = "close open positions now: `close SYMBOL` or `close --all` (by the running service, else directly)"


def configure(p) -> None:
    p.add_argument("symbol", nargs="?", help="e.g. ETH/USDT or ETHUSDT")
    p.add_argument("--all", action="store_true", help="every open position")


def run(args, ctx) -> int:
    from core.commands._control import run_command

    if bool(args.symbol) == bool(args.all):
        ctx.console.print("give a SYMBOL or --all (not both)")
        return 2
    return run_command(ctx, "close", {"symbol": args.symbol, "all": bool(args.all)})
