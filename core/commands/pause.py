"""`pitrader pause`: no new entries until `pitrader resume`; exits and exchange-side stops go on."""
from __future__ import annotations

NAME = "pause"
HELP = "pause new entries (exits go on) until `pitrader resume`; survives restarts"


def configure(p) -> None:
    pass


def run(args, ctx) -> int:
    from core.commands._control import run_command

    return run_command(ctx, "pause", {})
