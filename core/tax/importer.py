"""Writing to the fills ledger by hand: CSV import (our format and Binance exports) and reversals.

An import is all or nothing: every row is parsed and checked first, then all are inserted in one
transaction, so a bad row (reported as ``FILE:LINE: field: what is expected``) leaves the ledger
untouched. Duplicates are skipped and counted: by (source, symbol, trade_id) as the table's unique
key says, and rows that are the same trade as a fill the bot already recorded (a Binance export
covers the bot's own trades too), so nothing is counted twice.

Formats, told apart by the header:

* ``pitrader``: ``timestamp,symbol,side,quantity,price,fee,fee_asset,trade_id`` (any column
  order); ISO-8601 timestamps (UTC when no offset is given), ``BTC/USDT`` symbols. An empty
  trade_id gets one made from the row's content.
* ``binance``: Binance spot "Trade History" export, ``Date(UTC),Pair,Side,Price,Executed,Amount,
  Fee``, where Executed/Amount/Fee carry their asset (``0.00100000BTC``) and may have thousands
  separators. The pair is split where the amounts' assets say, else at a known quote currency.
* ``binance-legacy``: the older ``Date(UTC),Market,Type,Price,Amount,Total,Fee,Fee Coin`` export.

Exports carry no trade id, so one is made from the row's content (plus a counter for identical
rows in one file): importing the same export twice skips every row the second time.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import re
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from core.tax.ledger import Entry, bulk, effective, ms_from_iso
from core.models import BUY, SELL, Fill
from core.store.state import FILL_COLUMNS, fill_from_row

log = logging.getLogger(__name__)

SOURCE = "import"
NATIVE = ("timestamp", "symbol", "side", "quantity", "price", "fee", "fee_asset", "trade_id")
BINANCE = ("Date(UTC)", "Pair", "Side", "Price", "Executed", "Amount", "Fee")
BINANCE_LEGACY = ("Date(UTC)", "Market", "Type", "Price", "Amount", "Total", "Fee", "Fee Coin")
# Quote currencies Binance settles in, most used first: only consulted when a row's amounts do not
# name their assets (legacy export) or more than one split of the pair fits.
KNOWN_QUOTES = ("USDT", "BUSD", "FDUSD", "USDC", "TUSD", "USDP", "BTC", "ETH", "BNB", "EUR", "GBP", "TRY", "BRL",
                "AUD", "RUB", "UAH", "BIDR", "IDRT", "NGN", "ZAR", "PLN", "RON", "ARS", "JPY", "DAI", "PAX", "XRP",
                "TRX", "DOGE", "DOT", "USD")
_NUMBER = re.compile(r"^(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,3})?$")  # spreadsheets write 1E-05
_ASSET = re.compile(r"^[A-Z0-9]{1,20}$")
_PAIR = re.compile(r"^[A-Z0-9]{2,40}$")
_SYMBOL = re.compile(r"^([A-Z0-9]{1,20})/([A-Z0-9]{1,20})$")
_AMOUNT_ASSET = re.compile(r"^([\d.]+)([A-Z][A-Z0-9]*)$")
_EXPECT_TS = "expected an ISO-8601 UTC time such as 2024-02-01T13:45:00Z"


class CsvError(ValueError):
    """A row (or the file) that cannot be imported; ``str()`` is ``FILE:LINE: field: expected``."""

    def __init__(self, file: str | Path, line: int, fieldname: str, expected: str) -> None:
        self.file, self.line, self.field, self.expected = str(file), line, fieldname, expected
        super().__init__(f"{self.file}:{line}: {fieldname}: {expected}")


@dataclass(frozen=True, slots=True)
class Parsed:
    format: str
    fills: list[Fill]


@dataclass(frozen=True, slots=True)
class ImportResult:
    file: str
    format: str
    rows: int
    imported: int
    duplicates: int  # same (source, symbol, trade_id) already in the ledger or earlier in the file
    bot_duplicates: int  # the same trade as a fill the bot recorded


def _show(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


class _Row:
    """Field parsing for one row, raising ``CsvError`` with the file, line and field name."""

    def __init__(self, file: Path, line: int) -> None:
        self.file, self.line = file, line

    def fail(self, fieldname: str, expected: str) -> CsvError:
        return CsvError(self.file, self.line, fieldname, expected)

    def number(self, fieldname: str, text: str, *, positive: bool, commas: bool = False) -> Decimal:
        """A finite decimal (1E-05 too: spreadsheets write those); never a float on the way."""
        t = text.replace(",", "") if commas else text
        try:
            d = Decimal(t)
            ok = d.is_finite() and (d > 0 if positive else d >= 0) and "_" not in t
        except InvalidOperation:
            ok = False
        if not ok:
            what = "a number > 0" if positive else "a number >= 0 (empty means 0)"
            raise self.fail(fieldname, f"expected {what}, got {_show(text)}")
        return d

    def timestamp(self, fieldname: str, text: str) -> int:
        try:
            return ms_from_iso(text)
        except ValueError:
            raise self.fail(fieldname, f"{_EXPECT_TS}, got {_show(text)}") from None

    def side(self, fieldname: str, text: str) -> str:
        side = text.strip().lower()
        if side not in (BUY, SELL):
            raise self.fail(fieldname, f"expected buy or sell, got {_show(text)}")
        return side

    def asset(self, fieldname: str, text: str) -> str:
        a = text.strip().upper()
        if not _ASSET.match(a):
            raise self.fail(fieldname, f"expected an asset code such as BNB, got {_show(text)}")
        return a


def _synthetic_id(prefix: str, seen: dict[str, int], ts_ms: int, symbol: str, side: str, qty: Decimal,
                  price: Decimal, fee: Decimal, fee_asset: str | None) -> str:
    """A stable id from the row's content; identical rows in one file get -2, -3, ..."""
    content = "|".join((str(ts_ms), symbol, side, format(qty.normalize(), "f"), format(price.normalize(), "f"),
                        format(fee.normalize(), "f"), fee_asset or ""))
    digest = prefix + hashlib.sha1(content.encode()).hexdigest()[:20]
    n = seen[digest] = seen.get(digest, 0) + 1
    return digest if n == 1 else f"{digest}-{n}"


def _native(row: _Row, vals: list[str], seen: dict[str, int]) -> Fill:
    ts_text, symbol_text, side_text, qty_text, price_text, fee_text, fee_asset_text, trade_id = vals
    ts = row.timestamp("timestamp", ts_text)
    m = _SYMBOL.match(symbol_text.strip().upper())
    if not m or m.group(1) == m.group(2):
        raise row.fail("symbol", f"expected BASE/QUOTE such as BTC/USDT, got {_show(symbol_text)}")
    symbol = m.group(0)
    side = row.side("side", side_text)
    qty = row.number("quantity", qty_text, positive=True)
    price = row.number("price", price_text, positive=True)
    fee = row.number("fee", fee_text, positive=False) if fee_text.strip() else Decimal(0)
    fee_asset = row.asset("fee_asset", fee_asset_text) if fee_asset_text.strip() else None
    if fee > 0 and fee_asset is None:
        raise row.fail("fee_asset", "expected the asset the fee was paid in (e.g. USDT, BNB), got nothing")
    trade_id = trade_id.strip()
    if len(trade_id) > 100:
        raise row.fail("trade_id", "expected at most 100 characters")
    if not trade_id:
        trade_id = _synthetic_id("h-", seen, ts, symbol, side, qty, price, fee, fee_asset)
    return Fill(trade_id, ts, symbol, side, qty, price, fee, fee_asset, None, SOURCE)


def _amount_of(text: str, asset: str) -> Decimal | None:
    """The number in ``0.001BTC`` if the text ends with ``asset`` and the rest is a number."""
    t = text.strip().replace(",", "").upper()
    if not t.endswith(asset) or not _NUMBER.match(t[:-len(asset)]):
        return None
    return Decimal(t[:-len(asset)])


def _split_pair(row: _Row, fieldname: str, pair: str) -> tuple[str, str]:
    for quote in KNOWN_QUOTES:
        if pair.endswith(quote) and len(pair) > len(quote):
            return pair[:-len(quote)], quote
    raise row.fail(fieldname, f"expected a pair ending in a known quote currency ({', '.join(KNOWN_QUOTES[:8])}, "
                              f"...), got {_show(pair)}")


def _binance(row: _Row, vals: list[str], seen: dict[str, int]) -> Fill:
    v = dict(zip(BINANCE, vals))
    ts = row.timestamp("Date(UTC)", v["Date(UTC)"])
    pair = v["Pair"].strip().upper().replace("/", "")
    if not _PAIR.match(pair):
        raise row.fail("Pair", f"expected a Binance pair such as BTCUSDT, got {_show(v['Pair'])}")
    side = row.side("Side", v["Side"])
    price = row.number("Price", v["Price"], positive=True, commas=True)
    executed, amount = v["Executed"], v["Amount"]
    # The assets glued to Executed and Amount say where the pair splits (1INCHUSDT, BTCBUSD, ...).
    fits = []
    for i in range(1, len(pair)):
        base, quote = pair[:i], pair[i:]
        qty = _amount_of(executed, base)
        if qty is not None and _amount_of(amount, quote) is not None:
            fits.append((KNOWN_QUOTES.index(quote) if quote in KNOWN_QUOTES else len(KNOWN_QUOTES), base, quote, qty))
    if fits:
        _, base, quote, qty = min(fits)
    elif _NUMBER.match(executed.strip().replace(",", "")):  # a variant with bare numbers
        base, quote = _split_pair(row, "Pair", pair)
        qty = Decimal(executed.strip().replace(",", ""))
    else:
        raise row.fail("Executed", f"expected the executed quantity followed by the asset of {pair} "
                                   f"(e.g. 0.00100000BTC), got {_show(executed)}")
    if qty <= 0:
        raise row.fail("Executed", f"expected a quantity > 0, got {_show(executed)}")
    fee, fee_asset = _binance_fee(row, v["Fee"], base, quote)
    symbol = f"{base}/{quote}"
    trade_id = _synthetic_id("bn-", seen, ts, symbol, side, qty, price, fee, fee_asset)
    return Fill(trade_id, ts, symbol, side, qty, price, fee, fee_asset, None, SOURCE)


def _binance_fee(row: _Row, text: str, base: str, quote: str) -> tuple[Decimal, str | None]:
    t = text.strip().replace(",", "").upper()
    if not t or _NUMBER.match(t) and Decimal(t) == 0:
        return Decimal(0), None
    for asset in sorted((base, quote), key=len, reverse=True):
        fee = _amount_of(t, asset)
        if fee is not None:
            return fee, asset
    m = _AMOUNT_ASSET.match(t)
    if not m or not _NUMBER.match(m.group(1)):
        raise row.fail("Fee", f"expected the fee followed by its asset (e.g. 0.00010000BNB), got {_show(text)}")
    return Decimal(m.group(1)), m.group(2)


def _binance_legacy(row: _Row, vals: list[str], seen: dict[str, int]) -> Fill:
    v = dict(zip(BINANCE_LEGACY, vals))
    ts = row.timestamp("Date(UTC)", v["Date(UTC)"])
    market = v["Market"].strip().upper()
    if not _PAIR.match(market):
        raise row.fail("Market", f"expected a Binance pair such as BTCUSDT, got {_show(v['Market'])}")
    base, quote = _split_pair(row, "Market", market)
    side = row.side("Type", v["Type"])
    price = row.number("Price", v["Price"], positive=True, commas=True)
    qty = row.number("Amount", v["Amount"], positive=True, commas=True)
    fee = row.number("Fee", v["Fee"], positive=False, commas=True) if v["Fee"].strip() else Decimal(0)
    fee_asset = row.asset("Fee Coin", v["Fee Coin"]) if v["Fee Coin"].strip() else None
    if fee > 0 and fee_asset is None:
        raise row.fail("Fee Coin", "expected the asset the fee was paid in, got nothing")
    symbol = f"{base}/{quote}"
    trade_id = _synthetic_id("bn-", seen, ts, symbol, side, qty, price, fee, fee_asset)
    return Fill(trade_id, ts, symbol, side, qty, price, fee, fee_asset, None, SOURCE)


_FORMATS = (("pitrader", NATIVE, _native), ("binance", BINANCE, _binance),
            ("binance-legacy", BINANCE_LEGACY, _binance_legacy))


def parse_file(path: str | Path) -> Parsed:
    """Every row of the file as a Fill, or ``CsvError`` for the first row that is wrong."""
    path = Path(path)
    try:
        # utf-8-sig: Binance's exports start with a byte-order mark.
        with path.open(newline="", encoding="utf-8-sig") as fh, bulk():
            return _parse(path, fh)
    except FileNotFoundError:
        raise CsvError(path, 0, "(file)", "not found") from None
    except UnicodeDecodeError:
        raise CsvError(path, 0, "(file)", "expected UTF-8 text (a CSV file)") from None
    except csv.Error as exc:
        raise CsvError(path, 0, "(file)", f"expected CSV ({exc})") from None


def _parse(path: Path, fh) -> Parsed:
    reader = csv.reader(fh)
    header: list[str] | None = None
    for header in reader:
        if any(c.strip() for c in header):
            break
    else:
        raise CsvError(path, 1, "header", f"expected {','.join(NATIVE)}, got an empty file")
    names = [c.strip() for c in header]
    for fmt, required, parse_row in _FORMATS:
        if set(required) <= set(names):
            break
    else:
        raise CsvError(path, reader.line_num, "header",
                       f"expected {','.join(NATIVE)} or a Binance spot trade-history export "
                       f"({','.join(BINANCE)}), got {_show(','.join(names))}")
    index = [names.index(name) for name in required]
    width = len(names)
    seen: dict[str, int] = {}
    fills: list[Fill] = []
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        row = _Row(path, reader.line_num)
        if len(cells) != width:
            raise row.fail("(row)", f"expected {width} columns like the header, got {len(cells)}")
        try:
            fills.append(parse_row(row, [cells[i] for i in index], seen))
        except InvalidOperation:  # belt and braces: the regexes admit only valid decimals
            raise row.fail("(row)", "expected decimal numbers") from None
    return Parsed(fmt, fills)


# --- writing ------------------------------------------------------------------------------------

_INSERT = ("INSERT OR IGNORE INTO fills (trade_id, ts_ms, symbol, side, quantity, price, fee, fee_asset, order_id,"
           " source, created_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?)")


def _bot_trades(conn: sqlite3.Connection) -> tuple[set, Counter]:
    """The bot's effective fills: their trade ids, and how many of each trade shape (to the second)."""
    rows = conn.execute(f"SELECT {FILL_COLUMNS}, reverses FROM fills WHERE source='bot' OR reverses IS NOT NULL")
    entries = [Entry(fill_from_row(r), r[0], r[11]) for r in rows]
    ids, shapes = set(), Counter()
    for e in effective(entries):
        f = e.fill
        if f.source == "bot":
            ids.add((f.symbol, f.trade_id))
            shapes[(f.symbol, f.side, f.ts_ms // 1000, f.quantity.normalize(), f.price.normalize())] += 1
    return ids, shapes


def _is_bot_trade(f: Fill, ids: set, shapes: Counter) -> bool:
    """Same exchange trade id, or same symbol/side/quantity/price within a second (exports keep
    seconds only). Each bot fill matches one row at most: two equal partial fills stay two."""
    if (f.symbol, f.trade_id) in ids:
        return True
    q, p, s = f.quantity.normalize(), f.price.normalize(), f.ts_ms // 1000
    for d in (0, -1, 1):
        key = (f.symbol, f.side, s + d, q, p)
        if shapes[key] > 0:
            shapes[key] -= 1
            return True
    return False


def import_file(conn: sqlite3.Connection, path: str | Path, now_ms: int | None = None) -> ImportResult:
    """Parse, then insert every new row in one transaction (nothing is written if any row is bad)."""
    parsed = parse_file(path)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    ids, shapes = _bot_trades(conn) if parsed.fills else (set(), Counter())
    fresh = [f for f in parsed.fills if not _is_bot_trade(f, ids, shapes)] if ids or shapes else parsed.fills
    # format(.., "f"): amounts stored as plain digits, exactly as given (1E-05 becomes 0.00001)
    rows = [(f.trade_id, f.ts_ms, f.symbol, f.side, format(f.quantity, "f"), format(f.price, "f"),
             format(f.fee, "f"), f.fee_asset, f.order_id, f.source, now_ms) for f in fresh]
    conn.execute("BEGIN IMMEDIATE")
    try:
        before = conn.total_changes
        conn.executemany(_INSERT, rows)
        imported = conn.total_changes - before
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    result = ImportResult(str(path), parsed.format, len(parsed.fills), imported, len(fresh) - imported,
                          len(parsed.fills) - len(fresh))
    log.info("tax import %s (%s): %d rows, %d imported, %d duplicates, %d already recorded by the bot",
             path, parsed.format, result.rows, imported, result.duplicates, result.bot_duplicates)
    return result


class ReversalError(ValueError):
    pass


def add_reversal(conn: sqlite3.Connection, fill_id: int, now_ms: int | None = None) -> int:
    """Append an entry that cancels fill ``fill_id`` (the ledger's only way to correct a fill)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(f"SELECT {FILL_COLUMNS}, reverses FROM fills WHERE id=?", (fill_id,)).fetchone()
        if row is None:
            raise ReversalError(f"fill #{fill_id}: no such fill")
        rows = conn.execute(f"SELECT {FILL_COLUMNS}, reverses FROM fills WHERE reverses IS NOT NULL OR id=?",
                            (fill_id,)).fetchall()
        entries = [Entry(fill_from_row(r), r[0], r[11]) for r in rows]
        if _cancelled(entries, fill_id):
            raise ReversalError(f"fill #{fill_id}: already reversed")
        n = sum(1 for e in entries if e.reverses == fill_id) + 1
        f = fill_from_row(row)
        cur = conn.execute(
            "INSERT INTO fills (trade_id, ts_ms, symbol, side, quantity, price, fee, fee_asset, order_id, source,"
            " reverses, created_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (f"reversal:{fill_id}:{n}", f.ts_ms, f.symbol, f.side, str(f.quantity), str(f.price), str(f.fee),
             f.fee_asset, f.order_id, f.source, fill_id, now_ms))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    log.info("tax reverse: fill #%d reversed by fill #%d", fill_id, cur.lastrowid)
    return cur.lastrowid


def _cancelled(entries: list[Entry], fill_id: int) -> bool:
    cancelled: set[int] = set()
    for e in sorted(entries, key=lambda e: e.id, reverse=True):
        if e.reverses is not None and e.id not in cancelled:
            cancelled.add(e.reverses)
    return fill_id in cancelled
