"""Writing to the fills ledger by hand: CSV import (our format and Binance exports) and reversals.

An import is all or nothing: every row is parsed and checked first, then all are inserted in one
transaction, so a bad row (reported as ``FILE:LINE: field: what is expected``) leaves the ledger
untouched. Checked are each row on its own (numbers up to 1e15 with at most 18 decimals, a
quantity x price up to 1e15, times from 2009-01-03 to now, no control characters such as NUL)
and the whole ledger with the new rows, replayed as a report would (``ledger.check``): a row
that sells more than is held or pays a fee in a coin with no known price is refused, so an
accepted import never breaks a report. Problems the ledger already had before the import are
not held against it (importing the missing purchases is how they get fixed) but are returned.

Trade ids: a row with the trade id of an imported fill is a duplicate (skipped and counted) when
its contents are the same, and a conflict (refused) when they differ. After ``tax reverse`` of
that fill the id is free again: the corrected row is stored as ``ID~re2`` (then ``~re3``, ...),
since the table keeps one row per (source, symbol, trade_id). Rows that are the same trade as a
fill the bot already recorded (a Binance export covers the bot's own trades too) are skipped and
counted, so nothing is counted twice.

The formats and the row checks are in ``core.tax.csv_formats``.
"""
from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, replace
from decimal import Decimal, localcontext
from pathlib import Path

from core.tax.csv_formats import REVISION, SOURCE, CsvError, Parsed, parse_file
from core.tax.ledger import CONTEXT, bulk, check, effective, sort_key
from core.tax.periods import iso
from core.tax.records import Entry, LedgerError, MissingPriceError, OversellError, Settings, describe
from core.models import SELL, Fill
from core.store import ledger_queries
from core.store.state import fill_from_row

log = logging.getLogger(__name__)

_ATTEMPTS = 4  # validate-then-write rounds before validating inside the write lock


@dataclass(frozen=True, slots=True)
class ImportResult:
    file: str
    format: str
    rows: int
    imported: int
    duplicates: int  # same trade id and contents already in the ledger or earlier in the file
    bot_duplicates: int  # the same trade as a fill the bot recorded
    corrections: int = 0  # of the imported: rows whose trade id belonged to a reversed fill
    problems: tuple[str, ...] = ()  # what still stops a report, all of it there before this import


# The column of each format that a ledger problem is about.
_FIELDS = {"pitrader": {},
           "binance": {"quantity": "Executed", "fee": "Fee", "fee_asset": "Fee", "symbol": "Pair", "price": "Price"},
           "binance-legacy": {"quantity": "Amount", "fee": "Fee", "fee_asset": "Fee Coin", "symbol": "Market",
                              "price": "Price"}}


def _plain(x: Decimal) -> str:
    return format(x.normalize(), "f") if x else "0"


def _when(ts_ms: int) -> str:
    return iso(ts_ms) if ts_ms % 1000 == 0 else iso(ts_ms)[:-1] + f".{ts_ms % 1000:03d}Z"


def _differences(old: Fill, new: Fill, bot: bool = False) -> list[str]:
    """How two fills with one trade id differ ([] for the same trade). Against a bot fill the time
    is compared to the second (exports keep seconds) and the fee not at all (exports round it)."""
    out = []
    if (abs(old.ts_ms - new.ts_ms) >= 1000) if bot else old.ts_ms != new.ts_ms:
        out.append(f"timestamp {_when(old.ts_ms)} vs {_when(new.ts_ms)}")
    for name in ("side", "quantity", "price") + (() if bot else ("fee",)):
        a, b = getattr(old, name), getattr(new, name)
        if a != b:
            out.append(f"{name} {_plain(a) if isinstance(a, Decimal) else a} vs "
                       f"{_plain(b) if isinstance(b, Decimal) else b}")
    if not bot and old.fee and (old.fee_asset or "") != (new.fee_asset or ""):
        out.append(f"fee_asset {old.fee_asset} vs {new.fee_asset}")
    return out


def _revision(trade_id: str) -> tuple[str, int]:
    """(the trade id as imported, its revision): ``t1`` -> (t1, 1), ``t1~re2`` -> (t1, 2)."""
    m = REVISION.search(trade_id)
    return (trade_id[:m.start()], int(m.group(1))) if m else (trade_id, 1)


class _Known:
    """The ledger as it is, indexed for the duplicate and conflict checks of an import."""

    def __init__(self, entries: list[Entry]) -> None:
        live = {id(e) for e in effective(entries)}
        self.imports: dict[tuple[str, str], list[tuple[Entry, int, bool]]] = {}
        self.bot_ids: dict[tuple[str, str], Entry] = {}
        self.shapes: Counter = Counter()
        for e in entries:
            f = e.fill
            if e.reverses is not None:
                continue
            if f.source == SOURCE:
                trade_id, rev = _revision(f.trade_id)
                self.imports.setdefault((f.symbol, trade_id), []).append((e, rev, id(e) in live))
            elif id(e) in live:
                self.bot_ids[(f.symbol, f.trade_id)] = e
                self.shapes[(f.symbol, f.side, f.ts_ms // 1000, f.quantity.normalize(), f.price.normalize())] += 1

    def is_bot_trade(self, f: Fill, path: Path, line: int) -> bool:
        """Same exchange trade id (and the same trade, else a conflict), or same symbol/side/quantity/
        price within a second (exports keep seconds only). Each bot fill matches one row at most:
        two equal partial fills stay two."""
        bot = self.bot_ids.get((f.symbol, f.trade_id))
        if bot is not None:
            diffs = _differences(bot.fill, f, bot=True)
            if diffs:
                raise CsvError(path, line, "trade_id", f"expected the trade the bot recorded as fill #{bot.id} with "
                                                       f"trade id {f.trade_id!r} ({'; '.join(diffs)}), or another "
                                                       f"trade id")
            return True
        if not self.shapes:
            return False
        q, p, s = f.quantity.normalize(), f.price.normalize(), f.ts_ms // 1000
        for d in (0, -1, 1):
            key = (f.symbol, f.side, s + d, q, p)
            if self.shapes[key] > 0:
                self.shapes[key] -= 1
                return True
        return False


@dataclass(slots=True)
class _Plan:
    fresh: list[tuple[Fill, int]]  # (fill as it will be stored, line)
    duplicates: int = 0
    bot_duplicates: int = 0
    corrections: int = 0


def _plan(parsed: Parsed, path: Path, ledger: _Known) -> _Plan:
    """Sort the rows into new, duplicate, already recorded by the bot; refuse conflicting ids."""
    plan = _Plan([])
    in_file: dict[tuple[str, str], tuple[Fill, int]] = {}
    bot_trade = ledger.is_bot_trade if ledger.bot_ids or ledger.shapes else None
    known_get, earlier_get, fresh = ledger.imports.get, in_file.get, plan.fresh  # 10^5 rows: local names
    for f, line in zip(parsed.fills, parsed.lines):
        if bot_trade is not None and bot_trade(f, path, line):
            plan.bot_duplicates += 1
            continue
        key = (f.symbol, f.trade_id)
        earlier = earlier_get(key)
        if earlier is not None:
            diffs = _differences(earlier[0], f)
            if diffs:
                raise CsvError(path, line, "trade_id", f"expected another trade id or the same contents as line "
                                                       f"{earlier[1]}, which has trade id {f.trade_id!r} too "
                                                       f"({'; '.join(diffs)})")
            plan.duplicates += 1
            continue
        in_file[key] = (f, line)
        known = known_get(key)
        live = [e for e, _, is_live in known if is_live] if known else None
        if live:
            if any(not _differences(e.fill, f) for e in live):
                plan.duplicates += 1
                continue
            e = live[0]
            raise CsvError(path, line, "trade_id", f"expected the contents of fill #{e.id}, imported with trade id "
                                                   f"{f.trade_id!r} ({'; '.join(_differences(e.fill, f))}), or "
                                                   f"another trade id; to correct that fill run `pitrader tax "
                                                   f"reverse {e.id}`, then import this row again")
        if known:  # every earlier import of this id was reversed: this row is the correction
            f = replace(f, trade_id=f"{f.trade_id}~re{max(rev for _, rev, _ in known) + 1}")
            plan.corrections += 1
        fresh.append((f, line))
    return plan


def _problem_key(err: LedgerError) -> tuple:
    return (type(err).__name__, err.entry.id, getattr(err, "asset", None), getattr(err, "kind", None))


def _row_error(err: LedgerError, path: Path, line: int, fmt: str) -> CsvError:
    """A ledger problem at a new row, as ``FILE:LINE: field: what is expected``."""
    names = _FIELDS[fmt]
    f = err.entry.fill
    if isinstance(err, OversellError):
        name = "fee" if err.kind == "fee" else "quantity"
        what = f"a fee of {_plain(err.quantity)}" if err.kind == "fee" else (
            f"{'a sale' if f.side == SELL and err.asset == f.symbol.partition('/')[0] else 'a payment'} of "
            f"{_plain(err.quantity)}")
        return CsvError(path, line, names.get(name, name),
                        f"expected at most the {_plain(err.held)} {err.asset} held at that time, got {what} "
                        f"{err.asset}; import the fills that acquired it first (earlier rows of this file count)")
    if isinstance(err, MissingPriceError):
        name = "fee_asset" if err.why.startswith("the fee") else "symbol"
        return CsvError(path, line, names.get(name, name),
                        f"expected a price for {err.asset}: valuing {err.why} needs an {err.asset} trade against "
                        f"the reporting currency at or before this time; import one first (earlier rows of this "
                        f"file count)")
    return CsvError(path, line, "(row)", err.problem)


def _blame(err: LedgerError, new: list[Entry], lines: dict[int, int], path: Path, fmt: str) -> CsvError:
    """A fill already in the ledger that the new rows break (they sell its coins before it): name
    the last new row before it that moves that coin."""
    asset = getattr(err, "asset", "")
    limit = sort_key(err.entry)
    moves = [e for e in new if sort_key(e) <= limit and asset in (*e.fill.symbol.split("/"), e.fill.fee_asset)]
    culprit = max(moves, key=sort_key) if moves else min(new, key=sort_key)
    f = culprit.fill
    name = "fee" if asset == f.fee_asset and asset not in f.symbol.split("/") else "quantity"
    return CsvError(path, lines[id(culprit)], _FIELDS[fmt].get(name, name),
                    f"expected to leave enough {asset} for the fills after it, but with this row {describe(err.entry)} "
                    f"{err.problem.split('; ')[0]}; import the fills that acquired it, or correct this row")


def _validate(entries: list[Entry], plan: _Plan, path: Path, fmt: str, settings: Settings) -> tuple[str, ...]:
    """Replay the ledger with the new rows as a report would; refuse (``CsvError``) a row that
    breaks it. Returns the problems left that were there before (not this import's doing)."""
    new = [Entry(f) for f, _ in plan.fresh]
    lines = {id(e): line for e, (_, line) in zip(new, plan.fresh)}
    errors = check(entries + new, settings)
    if not errors:
        return ()
    for err in errors:
        if id(err.entry) in lines:
            raise _row_error(err, path, lines[id(err.entry)], fmt)
    before = {_problem_key(e) for e in check(entries, settings)}
    for err in errors:
        if _problem_key(err) not in before:
            raise _blame(err, new, lines, path, fmt)
    return tuple(str(e) for e in errors)


def _load(conn: sqlite3.Connection) -> list[Entry]:
    return [Entry(fill_from_row(r), r[0], r[11]) for r in ledger_queries.ledger_rows(conn)]


def import_file(conn: sqlite3.Connection, path: str | Path, now_ms: int | None = None,
                settings: Settings | None = None) -> ImportResult:
    """Parse and check the file, check the whole ledger with its new rows (``settings``: the cash
    assets the reports use), then insert every new row in one transaction (``now_ms``: their
    created time). Nothing is written if any row is bad (``CsvError``).

    The ledger is read and checked outside the write lock (seconds on a Pi for a large ledger, and
    the bot must be able to record fills meanwhile); if a fill arrived in between, it is done
    again, the last time inside the lock."""
    path = Path(path)
    parsed = parse_file(path)  # "the future" is the clock's, whatever ``now_ms`` records
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    settings = settings or Settings()
    for attempt in range(_ATTEMPTS):
        locked = attempt == _ATTEMPTS - 1
        if locked:
            ledger_queries.begin_write(conn)
        try:
            version = ledger_queries.last_fill_id(conn)
            # bulk: 10^5 rows of small objects (the cyclic GC would rescan them over and over);
            # CONTEXT: normalize() and products at the ledger's 40 digits, never the default 28
            with bulk(), localcontext(CONTEXT):
                entries = _load(conn) if parsed.fills else []
                plan = _plan(parsed, path, _Known(entries))
                problems = _validate(entries, plan, path, parsed.format, settings) if plan.fresh else ()
            if not locked and not ledger_queries.begin_write_if_unchanged(conn, version):
                continue  # the bot recorded a fill meanwhile: check again
            with bulk():
                imported = ledger_queries.insert_imported(conn, (f for f, _ in plan.fresh), now_ms)
        except BaseException:
            ledger_queries.rollback(conn)
            raise
        ledger_queries.commit(conn)
        break
    result = ImportResult(str(path), parsed.format, len(parsed.fills), imported,
                          plan.duplicates + len(plan.fresh) - imported, plan.bot_duplicates, plan.corrections,
                          problems)
    log.info("tax import %s (%s): %d rows, %d imported (%d corrections of reversed fills), %d duplicates, "
             "%d already recorded by the bot", path, parsed.format, result.rows, imported, result.corrections,
             result.duplicates, result.bot_duplicates)
    return result


class ReversalError(ValueError):
    pass


def add_reversal(conn: sqlite3.Connection, fill_id: int, now_ms: int | None = None) -> int:
    """Append an entry that cancels fill ``fill_id`` (the ledger's only way to correct a fill)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    with ledger_queries.write_lock(conn):
        row = ledger_queries.ledger_row(conn, fill_id)
        if row is None:
            raise ReversalError(f"fill #{fill_id}: no such fill")
        entries = [Entry(fill_from_row(r), r[0], r[11]) for r in ledger_queries.reversal_rows(conn, fill_id)]
        if _cancelled(entries, fill_id):
            raise ReversalError(f"fill #{fill_id}: already reversed")
        n = sum(1 for e in entries if e.reverses == fill_id) + 1
        new_id = ledger_queries.insert_reversal(conn, f"reversal:{fill_id}:{n}", fill_from_row(row), fill_id, now_ms)
    log.info("tax reverse: fill #%d reversed by fill #%d", fill_id, new_id)
    return new_id


def _cancelled(entries: list[Entry], fill_id: int) -> bool:
    cancelled: set[int] = set()
    for e in sorted(entries, key=lambda e: e.id, reverse=True):
        if e.reverses is not None and e.id not in cancelled:
            cancelled.add(e.reverses)
    return fill_id in cancelled
