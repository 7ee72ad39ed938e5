"""`pitrader` command line: global options, then one subcommand module per command.

Subcommands live in ``core/commands/`` (one module each, discovered at start-up), so adding a
command is one new file. Heavy imports (numba, ccxt) happen inside the commands, keeping
``pitrader --help`` and config errors fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.highlighter import RegexHighlighter
from rich.theme import Theme

from core import __version__
from core.commands._storage import StorageError, from_numba
from core.config import Config, ConfigError, default_config_path, load_config
from core.exitcodes import (EX_CANTCREAT, EX_CONFIG, EX_DATAERR, EX_FAILED, EX_INTERRUPTED, EX_NOINPUT, EX_NOPERM,
                            EX_SOFTWARE, EX_STATE, EX_UNAVAILABLE, EX_USAGE)
from core.secrets import Secrets, check_mode, default_env_path, load_secrets
from core.store.errors import StateDatabaseError, storage_fault

# Every code the CLI uses, for --help and README (tests check both list the same codes).
EXIT_CODES = {
    0: "ok", EX_FAILED: "a check, download or verification failed", EX_USAGE: "usage",
    EX_DATAERR: "bad input data", EX_NOINPUT: "an input file is missing", EX_UNAVAILABLE: "exchange unreachable",
    EX_SOFTWARE: "internal error (a bug)",
    EX_CANTCREAT: "an output file cannot be created", EX_STATE: "the state database needs a person",
    EX_NOPERM: "a directory pitrader must write (state, numba cache) is unusable",
    EX_CONFIG: "bad configuration or secrets", EX_INTERRUPTED: "interrupted (Ctrl-C)",
}


@dataclass
class CliContext:
    """What every command gets: resolved paths and lazy, validated config and secrets."""

    config_path: Path
    env_path: Path | None
    state_dir: Path
    console: Console = field(default_factory=lambda: Console(stderr=False, highlight=False))
    config_given: bool = False  # --config named explicitly (then it must exist)
    _config: Config | None = None
    _secrets: Secrets | None = None

    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    def config_or_defaults(self) -> Config:
        """For offline commands (demo, backtest, download): a checkout without a config file
        runs on the defaults; a config that exists, or one named with --config, must be valid."""
        if self.config_given or self.config_path.exists():
            return self.config()
        return Config()

    def reload_config(self) -> Config:
        """Read config and secrets again (SIGHUP); raises ConfigError and keeps the old ones if bad."""
        cfg = load_config(self.config_path)
        secrets = load_secrets(self.env_path)
        check_mode(cfg, secrets)
        self._config, self._secrets = cfg, secrets
        return cfg

    def secrets(self) -> Secrets:
        if self._secrets is None:
            self._secrets = load_secrets(self.env_path)
            check_mode(self.config(), self._secrets)
        return self._secrets


def resolve_state_dir(cli_value: str | None) -> Path:
    """$STATE_DIRECTORY (systemd StateDirectory=) wins, then --state-dir, then ./var/."""
    env = os.environ.get("STATE_DIRECTORY")
    if env:
        return Path(env.split(":")[0])
    return Path(cli_value) if cli_value else Path("var")


def _commands() -> dict[str, object]:
    import core.commands as pkg

    mods = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"core.commands.{info.name}")
        mods[mod.NAME] = mod
    return dict(sorted(mods.items()))


class _HelpHighlighter(RegexHighlighter):
    base_style = "help."
    highlights = [r"(?P<option>(?<![\w-])--?[\w-]+)", r"(?P<heading>^[\w ]+:$)", r"(?P<metavar>\b[A-Z][A-Z0-9_]+\b)"]


class RichParser(argparse.ArgumentParser):
    """argparse with help rendered through rich: options, headings and metavars coloured."""

    def print_help(self, file=None) -> None:
        theme = Theme({"help.option": "cyan", "help.heading": "bold yellow", "help.metavar": "green"})
        console = Console(file=file, highlighter=_HelpHighlighter(), theme=theme)
        console.print(self.format_help(), markup=False, soft_wrap=True)


def _global_options(parser: argparse.ArgumentParser, default=None) -> None:
    parser.add_argument("--config", metavar="PATH", default=default, help="config.json to use")
    parser.add_argument("--env-file", metavar="PATH", default=default, help="secrets file (BINANCE_API_KEY, ...)")
    parser.add_argument("--state-dir", metavar="DIR", default=default,
                        help="state directory (default $STATE_DIRECTORY or ./var)")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = RichParser(
        prog="pitrader", formatter_class=fmt,
        description="Crypto trading appliance: numba market scanner, risk-gated executor, tax ledger.",
        epilog="Config: --config, else $PITRADER_CONFIG, /etc/pitrader/config.json, ./config.json. "
               "Exit codes: " + ", ".join(f"{k} {v}" for k, v in sorted(EXIT_CODES.items())) + ".")
    parser.add_argument("--version", action="version", version=f"pitrader {__version__}")
    _global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=RichParser)
    commands = _commands()
    for name, mod in commands.items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP, formatter_class=fmt)
        _global_options(p, argparse.SUPPRESS)  # `pitrader status --state-dir X` works too
        mod.configure(p)
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    # `run`: SIGHUP / SIGTERM are recorded from here on, before numba and ccxt are imported
    # (seconds on a Pi); the engine takes them over (core/service/signals.py).
    from core.service.signals import install_if_run

    early = install_if_run(sys.argv[1:] if argv is None else list(argv))
    try:
        return _main(argv, early)
    finally:
        if early is not None:
            early.uninstall()


def _main(argv: list[str] | None, early) -> int:
    from core.exchange.gateway import AuthenticationFailed, GatewayError
    from core.exchange.replay import DataError

    parser, commands = build_parser()
    args = parser.parse_args(argv)
    if early is not None and args.command != "run":
        early.uninstall()
    if not args.command:
        parser.print_help()
        return EX_USAGE
    ctx = CliContext(
        config_path=Path(args.config) if args.config else default_config_path(),
        env_path=Path(args.env_file) if args.env_file else default_env_path(),
        state_dir=resolve_state_dir(args.state_dir),
        config_given=bool(args.config),
    )
    try:
        return int(commands[args.command].run(args, ctx) or 0)
    except ConfigError as exc:
        print(f"pitrader: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except DataError as exc:
        print(f"pitrader: data error: {exc}", file=sys.stderr)
        return EX_DATAERR
    except AuthenticationFailed as exc:
        print(f"pitrader: config error: the exchange refused the API key ({exc}); check {ctx.env_path or 'the env file'}",
              file=sys.stderr)
        return EX_CONFIG
    except GatewayError as exc:
        print(f"pitrader: exchange unavailable: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    except StorageError as exc:
        print(f"pitrader: {exc}", file=sys.stderr)
        return EX_NOPERM
    except StateDatabaseError as exc:
        print(f"pitrader: {exc}", file=sys.stderr)
        return EX_STATE
    except sqlite3.DatabaseError as exc:  # found while reading or writing, after the checks at open
        kind = storage_fault(exc)
        if kind is None:
            logging.getLogger("pitrader").exception("pitrader %s failed unexpectedly", args.command)
            return EX_SOFTWARE
        advice = {"corrupt": "restore the state database from a backup (pitrader backup list / restore)",
                  "full": "free space on its file system", "io": "check the storage (SD card) and its mount"}[kind]
        print(f"pitrader: database error in {ctx.state_dir}: {exc}; {advice}", file=sys.stderr)
        return EX_STATE
    except KeyboardInterrupt:
        return EX_INTERRUPTED
    except OSError as exc:
        if exc.filename is None:  # not about a path we were told to use: a bug
            logging.getLogger("pitrader").exception("pitrader %s failed unexpectedly", args.command)
            return EX_SOFTWARE
        print(f"pitrader: {exc.filename}: {exc.strerror or exc} (check the path and its permissions)",
              file=sys.stderr)
        return EX_NOPERM
    except RuntimeError as exc:
        storage = from_numba(exc)
        if storage is None:
            logging.getLogger("pitrader").exception("pitrader %s failed unexpectedly", args.command)
            return EX_SOFTWARE
        print(f"pitrader: {storage}", file=sys.stderr)
        return EX_NOPERM
    except Exception:  # noqa: BLE001 - a bug: the journal gets the traceback at error priority
        logging.getLogger("pitrader").exception("pitrader %s failed unexpectedly", args.command)
        return EX_SOFTWARE


if __name__ == "__main__":
    sys.exit(main())
