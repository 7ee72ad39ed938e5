"""`pitrader config check`: validate config.json and the env file, print the effective config."""
from __future__ import annotations

import argparse
import json

from rich.syntax import Syntax

from core.config import to_dict

NAME = "config"
HELP = "check the configuration and print the effective settings (secrets masked)"


def configure(p) -> None:
    sub = p.add_subparsers(dest="config_cmd", metavar="ACTION", required=True)
    check = sub.add_parser("check", help=HELP)
    check.add_argument("--json", action="store_true", help="print machine-readable JSON")
    # `pitrader config check --config X` like every other command (argparse keeps the global and
    # the subcommand's options apart; SUPPRESS leaves the global value when not given here)
    check.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help="config.json to use")
    check.add_argument("--env-file", metavar="PATH", default=argparse.SUPPRESS, help="secrets file")
    check.add_argument("--state-dir", metavar="DIR", default=argparse.SUPPRESS, help="state directory")


def run(args, ctx) -> int:
    cfg = ctx.config()
    secrets = ctx.secrets()
    doc = {"config_file": str(ctx.config_path), "env_file": str(ctx.env_path) if ctx.env_path else None,
           "config": to_dict(cfg), "secrets": secrets.masked()}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    ctx.console.print(f"[green]ok[/]: {ctx.config_path} is valid (mode: [bold]{cfg.mode}[/])")
    ctx.console.print(Syntax(json.dumps(doc, indent=2), "json", theme="ansi_dark", background_color="default"))
    return 0
