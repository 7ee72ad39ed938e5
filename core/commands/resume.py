"""`pitrader resume`: allow new entries again after `pitrader pause`."""
from __future__ import annotations

NAME = "resume"
HELP = "allow new entries again after `pitrader pause`"


def configure(p) -> None:
    pass


def run(args, ctx) -> int:
    from core.commands._control import run_command

    return run_command(ctx, "resume", {})
