"""`pitrader exclude SYMBOL [--remove]`: a runtime blacklist of pairs (no new entries), kept across restarts."""
from __future__ import annotations

NAME = "exclude"
HELP = "no new entries on SYMBOL (kept across restarts); `exclude --remove SYMBOL` undoes it"


def configure(p) -> None:
    p.add_argument("symbol", help="e.g. ETH/USDT or ETHUSDT")
    p.add_argument("--remove", action="store_true", help="take SYMBOL off the list again")


def run(args, ctx) -> int:
    from core.commands._control import run_command

    return run_command(ctx, "exclude", {"symbol": args.symbol, "remove": bool(args.remove)})
