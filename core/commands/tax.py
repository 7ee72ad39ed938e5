"""`pitrader tax import|report|reverse`: the fills ledger from the command line.

Reads and writes the live database (``STATE/live.db``) unless ``--paper`` is given. Exit codes:
0 ok, 65 (EX_DATAERR) a bad CSV row or fills the ledger cannot match (the message names the line
or the fill), 66 (EX_NOINPUT) the input file is missing, 73 (EX_CANTCREAT) --output cannot be
written, 78 bad configuration.
"""
from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path

from core.store import state as store
NAME = "tax"
HELP = "tax ledger: import fills from CSV, yearly reports (FIFO/LIFO/HIFO), reverse a fill"
EX_DATAERR, EX_NOINPUT, EX_CANTCREAT = 65, 66, 73


def _year(text: str) -> int:
    if not text.isdigit() or not 1970 <= int(text) <= 9999:
        raise argparse.ArgumentTypeError(f"expected a calendar year such as 2024, got {text!r}")
    return int(text)


def configure(p) -> None:
    from core.tax.ledger import METHODS
    from core.tax.report import FORMATS

    sub = p.add_subparsers(dest="tax_cmd", metavar="ACTION", required=True)
    imp = sub.add_parser("import", help="import fills from a CSV file (ours or a Binance trade-history export)",
                         description="Import fills from FILE: header timestamp,symbol,side,quantity,price,fee,"
                                     "fee_asset,trade_id (ISO-8601 UTC, BTC/USDT symbols), or Binance's spot "
                                     "trade-history export. All rows or none; duplicates are skipped and counted.")
    imp.add_argument("file", metavar="FILE")
    imp.add_argument("--paper", action="store_true", help="use the paper-trading database instead of live")
    rep = sub.add_parser("report", help="gains and losses of a calendar year (UTC)",
                         description="Gains and losses of the disposals sold in a UTC calendar year, lots matched "
                                     "over every fill since the first. Method, jurisdiction and holding period "
                                     "come from the tax section of the config.")
    rep.add_argument("--year", type=_year, required=True, help="calendar year, UTC")
    rep.add_argument("--method", choices=METHODS, help="lot matching (default: tax.method in the config)")
    rep.add_argument("--format", choices=FORMATS, default="table",
                     help="table (default), csv (all disposals with lot ids), 8949 (Form 8949 columns), "
                          "koinly (Koinly universal CSV of the year's fills), json")
    rep.add_argument("--output", metavar="FILE", help="write the report to FILE instead of the terminal")
    rep.add_argument("--paper", action="store_true", help="use the paper-trading database instead of live")
    rev = sub.add_parser("reverse", help="cancel a fill by appending a reversal entry (fills are never edited)")
    rev.add_argument("fill_id", type=int, metavar="FILL_ID", help="the fill's number (#N in reports and errors)")
    rev.add_argument("--paper", action="store_true", help="use the paper-trading database instead of live")


def _busy(ctx, what: str):
    """A spinner on a terminal (a 100k-fill ledger takes seconds on a Pi); nothing otherwise."""
    return ctx.console.status(what) if ctx.console.is_terminal else nullcontext()


def _err(message: str) -> None:
    print(f"pitrader: {message}", file=sys.stderr)


def run(args, ctx) -> int:
    cfg = ctx.config()  # the config is required like everywhere else (exit 78 when it is bad)
    path = store.db_path(ctx.state_dir, "paper" if args.paper else "live")
    if args.tax_cmd == "import":
        return _import(args, ctx, path)
    if args.tax_cmd == "reverse":
        return _reverse(args, ctx, path)
    return _report(args, ctx, cfg, path)


def _import(args, ctx, path: Path) -> int:
    from core.tax.importer import CsvError, import_file

    src = Path(args.file)
    if not src.is_file():
        _err(f"{src}: not found (expected a CSV file of fills)")
        return EX_NOINPUT
    conn = store.connect_sync(path)
    try:
        with _busy(ctx, f"importing {src.name}"):
            res = import_file(conn, src)
    except CsvError as exc:
        _err(f"{exc} (nothing imported)")
        return EX_DATAERR
    finally:
        conn.close()
    extra = f", {res.bot_duplicates} already recorded by the bot" if res.bot_duplicates else ""
    ctx.console.print(f"imported {res.imported} fill(s) from {src} ({res.format} format) into {path}; "
                      f"skipped {res.duplicates} duplicate(s){extra}", soft_wrap=True)
    return 0


def _reverse(args, ctx, path: Path) -> int:
    from core.tax.importer import ReversalError, add_reversal

    if not path.exists():
        _err(f"fill #{args.fill_id}: no ledger at {path} yet")
        return EX_DATAERR
    conn = store.connect_sync(path)
    try:
        new_id = add_reversal(conn, args.fill_id)
    except ReversalError as exc:
        _err(str(exc))
        return EX_DATAERR
    finally:
        conn.close()
    ctx.console.print(f"fill #{args.fill_id} reversed by fill #{new_id} in {path}", soft_wrap=True)
    return 0


def _report(args, ctx, cfg, path: Path) -> int:
    from core.tax.ledger import LedgerError
    from core.tax.report import build, load_entries, render_table, render_text, settings_from_config, stale_note

    settings = settings_from_config(cfg, args.method)
    if not path.exists():
        # an empty report could be read as "no gains": say plainly that there is nothing to read
        _err(f"no ledger at {path}: wrong --state-dir? (on the Pi: sudo pitrader tax report ...); "
             "import fills with `pitrader tax import FILE`")
        return EX_NOINPUT
    conn = store.connect_sync(path)
    try:
        entries = load_entries(conn)
    finally:
        conn.close()
    try:
        with _busy(ctx, f"matching {len(entries):,} fills into lots ({settings.method.upper()})"):
            rep = build(entries, args.year, settings, cfg.tax.currency, match=args.format != "koinly")
    except LedgerError as exc:
        _err(str(exc))
        return EX_DATAERR
    if args.format == "table" and not args.output:
        render_table(rep, ctx.console)
        return 0
    note = stale_note(rep)
    if note:
        print(f"pitrader: {note}", file=sys.stderr)
    text = render_text(rep, args.format)
    if args.output:
        out = Path(args.output)
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            _err(f"{out}: cannot be written ({exc.strerror or exc.__class__.__name__})")
            return EX_CANTCREAT
        print(f"wrote {out}: {len(rep.disposals)} disposal(s), {len(rep.fills)} fill(s); {rep.settings_line}",
              file=sys.stderr)
    else:
        sys.stdout.write(text)
        if args.format == "koinly":
            print(rep.settings_line, file=sys.stderr)
    return 0
