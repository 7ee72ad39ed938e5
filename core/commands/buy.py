"""`pitrader buy SYMBOL --quote AMOUNT [--limit PRICE] [--force]`: a manual entry through the risk gate."""
from __future__ import annotations

NAME = "buy"
HELP = "manual entry through the risk gate: `buy SYMBOL --quote AMOUNT [--limit PRICE] [--force]`"


def configure(p) -> None:
    p.add_argument("symbol", help="e.g. ETH/USDT or ETHUSDT")
    p.add_argument("--quote", required=True, metavar="AMOUNT", help="how much of the quote currency to spend")
    p.add_argument("--limit", metavar="PRICE", help="a limit order at PRICE (default: market)")
    p.add_argument("--force", action="store_true",
                   help="skip the risk gate's soft checks (score, slots, cooldown, halts); never the exchange's rules")


def run(args, ctx) -> int:
    from core.commands._control import run_command

    return run_command(ctx, "buy", {"symbol": args.symbol, "quote": args.quote, "limit": args.limit,
                                    "force": bool(args.force)})
