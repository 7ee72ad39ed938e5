"""`pitrader tax import|report|reverse`: the fills ledger from the command line.

Reads and writes the live database (``STATE/live.db``) unless ``--paper`` is given. Exit codes:
0 ok, 65 (EX_DATAERR) a bad CSV row, a row that would leave fills the ledger cannot match or a
trade id that conflicts (the message names the line or the fill; nothing is imported), 66
(EX_NOINPUT) the input file or the ledger is missing, 73 (EX_CANTCREAT) --output cannot be
written, 78 bad configuration.
"""
from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path

from core.store import state as store
from core.exitcodes import EX_CANTCREAT, EX_DATAERR, EX_NOINPUT

NAME = "tax"
HELP = "tax ledger: import fills from CSV, yearly reports (FIFO/LIFO/HIFO), reverse a fill"


def _year(text: str) -> int:
    if not text.isdigit() or not 1970 <= int(text) <= 9999:
        raise argparse.ArgumentTypeError(f"expected a calendar year such as 2024, got {text!r}")
    return int(text)


def configure(p) -> None:
    from core.tax.records import METHODS
    from core.tax.report import FORMATS

    sub = p.add_subparsers(dest="tax_cmd", metavar="ACTION", required=True)
    imp = sub.add_parser("import", help="import fills from a CSV file (ours or a Binance trade-history export)",
                         description="Import fills from FILE: header timestamp,symbol,side,quantity,price,fee,"
                                     "fee_asset,trade_id (ISO-8601 UTC, BTC/USDT symbols), or Binance's spot "
                                     "trade-history export. All rows or none: a row that would break a report (selling "
                                     "more than is held, a fee in a coin with no known price) or reuses a trade id "
                                     "with other contents stops the import. Duplicates are skipped and counted.")
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
                          "koinly (Koinly universal CSV of every fill up to the end of the year), json")
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
        return _import(args, ctx, cfg, path)
    if args.tax_cmd == "reverse":
        return _reverse(args, ctx, cfg, path)
    return _report(args, ctx, cfg, path)


def _no_ledger(args, ctx, path: Path) -> str:
    """Why there is nothing to read at ``path``, and the likely fix (a paper user forgot --paper)."""
    paper = store.db_path(ctx.state_dir, "paper")
    if not args.paper and paper.exists():
        return f"no ledger at {path}, but there is a paper-trading one at {paper}: add --paper"
    return f"no ledger at {path}: wrong --state-dir? (on the Pi: sudo pitrader tax ...)"


def _import(args, ctx, cfg, path: Path) -> int:
    from core.tax.importer import CsvError, import_file
    from core.tax.report import settings_from_config

    src = Path(args.file)
    if not src.is_file():
        _err(f"{src}: not found (expected a CSV file of fills)")
        return EX_NOINPUT
    conn = store.connect_sync(path)
    try:
        with _busy(ctx, f"importing {src.name}"):
            res = import_file(conn, src, settings=settings_from_config(cfg))
    except CsvError as exc:
        _err(f"{exc} (nothing imported)")
        return EX_DATAERR
    finally:
        conn.close()
    extra = f", {res.bot_duplicates} already recorded by the bot" if res.bot_duplicates else ""
    fixed = f" ({res.corrections} replacing reversed fills)" if res.corrections else ""
    ctx.console.print(f"imported {res.imported} fill(s){fixed} from {src} ({res.format} format) into {path}; "
                      f"skipped {res.duplicates} duplicate(s){extra}", soft_wrap=True)
    if res.problems:  # there before this import; importing the missing fills is how they get fixed
        _err(f"note: reports still fail on {len(res.problems)} problem(s) the ledger had before this import; "
             f"the first: {res.problems[0]}")
    return 0


def _reverse(args, ctx, cfg, path: Path) -> int:
    from core.tax.importer import ReversalError, add_reversal
    from core.tax.ledger import check
    from core.tax.report import load_entries, settings_from_config

    if not path.exists():
        _err(f"fill #{args.fill_id}: {_no_ledger(args, ctx, path)}")
        return EX_DATAERR
    conn = store.connect_sync(path)
    try:
        new_id = add_reversal(conn, args.fill_id)
        problems = check(load_entries(conn), settings_from_config(cfg))
    except ReversalError as exc:
        _err(str(exc))
        return EX_DATAERR
    finally:
        conn.close()
    ctx.console.print(f"fill #{args.fill_id} reversed by fill #{new_id} in {path}", soft_wrap=True)
    if problems:  # e.g. a wrong purchase reversed before its corrected row is imported
        _err(f"note: reports fail until the ledger is fixed ({len(problems)} problem(s)); the first: {problems[0]}; "
             f"import the corrected row with `pitrader tax import FILE`")
    return 0


def _report(args, ctx, cfg, path: Path) -> int:
    from core.tax.records import LedgerError
    from core.tax.report import build, load_entries, render_table, render_text, settings_from_config, stale_note

    settings = settings_from_config(cfg, args.method)
    if not path.exists():
        # an empty report could be read as "no gains": say plainly that there is nothing to read
        _err(f"{_no_ledger(args, ctx, path)}; import fills with `pitrader tax import FILE`")
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
        what = (f"{len(rep.history)} fill(s) up to the end of {rep.year}" if args.format == "koinly" else
                f"{len(rep.disposals)} disposal(s), {len(rep.fills)} fill(s)")
        print(f"wrote {out}: {what}; {rep.settings_line}", file=sys.stderr)
    else:
        sys.stdout.write(text)
        if args.format != "json":  # the CSV files hold data only: the settings go to stderr
            print(rep.settings_line, file=sys.stderr)
    return 0
