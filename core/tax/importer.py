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
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation, localcontext
from pathlib import Path

from core.tax.ledger import (CONTEXT, MAX_AMOUNT, MAX_VALUE, Entry, LedgerError, MissingPriceError, OversellError,
                             Settings, bulk, check, describe, effective, iso, ms_from_iso, sort_key)
from core.models import BUY, SELL, Fill
from core.store import ledger_queries
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
MAX_DECIMALS = 18  # ETH's smallest unit; more is a typo or an attack, never a trade
EARLIEST_MS = ms_from_iso("2009-01-03T00:00:00Z")  # the first bitcoin block: no crypto trade is older
FUTURE_SLACK_MS = 5 * 60_000  # clocks differ a little; a trade from the future is a wrong time zone or a typo
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_REVISION = re.compile(r"~re(\d+)$")  # the stored trade id of a corrected re-import: ID~re2, ID~re3, ...
_ATTEMPTS = 4  # validate-then-write rounds before validating inside the write lock


class CsvError(ValueError):
    """A row (or the file) that cannot be imported; ``str()`` is ``FILE:LINE: field: expected``."""

    def __init__(self, file: str | Path, line: int, fieldname: str, expected: str) -> None:
        self.file, self.line, self.field, self.expected = str(file), line, fieldname, expected
        super().__init__(f"{self.file}:{line}: {fieldname}: {expected}")


@dataclass(frozen=True, slots=True)
class Parsed:
    format: str
    fills: list[Fill]
    lines: list[int]  # the file's line of each fill, for FILE:LINE in the ledger checks


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


def _show(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _decimals(d: Decimal) -> int:
    """Decimal places of a finite number, trailing zeros not counted (1.500 has 1)."""
    _, digits, exp = d.as_tuple()
    if exp >= -MAX_DECIMALS:  # the usual case, settled without looking at the digits
        return max(0, -exp)
    zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -exp - zeros)


class _Row:
    """Field parsing for one row, raising ``CsvError`` with the file, line and field name."""

    def __init__(self, file: Path, line: int, now_ms: int) -> None:
        self.file, self.line, self.now_ms = file, line, now_ms

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
        return self.bounded(fieldname, d, text)

    def bounded(self, fieldname: str, d: Decimal, text: str) -> Decimal:
        """At most 1e15 and 18 decimals: every figure a report derives then fits its arithmetic."""
        if d > MAX_AMOUNT:
            raise self.fail(fieldname, f"expected a number at most {MAX_AMOUNT:,.0f} (1e15), got {_show(text)}")
        dot = text.find(".")
        if (dot < 0 or len(text) - dot <= MAX_DECIMALS + 1) and "e" not in text and "E" not in text:
            return d  # plain digits with few enough after the point: the usual case, settled on the text
        if _decimals(d) > MAX_DECIMALS:
            raise self.fail(fieldname, f"expected at most {MAX_DECIMALS} decimal places, got {_show(text)}")
        return d

    def value(self, fieldname: str, qty: Decimal, price: Decimal) -> None:
        if qty * price > MAX_VALUE:
            raise self.fail(fieldname, f"expected quantity x price at most {MAX_VALUE:,.0f} (1e15), got "
                                       f"{qty * price:.3e}")

    def timestamp(self, fieldname: str, text: str) -> int:
        try:
            ts = ms_from_iso(text)
        except (ValueError, OverflowError):
            raise self.fail(fieldname, f"{_EXPECT_TS}, got {_show(text)}") from None
        if ts < EARLIEST_MS:
            raise self.fail(fieldname, f"expected a time on or after 2009-01-03 (the first bitcoin block), "
                                       f"got {_show(text)}")
        if ts > self.now_ms + FUTURE_SLACK_MS:
            raise self.fail(fieldname, f"expected a time that is not in the future (now is {iso(self.now_ms)}; "
                                       f"a time without an offset is UTC), got {_show(text)}")
        return ts

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
    row.value("price", qty, price)
    fee = row.number("fee", fee_text, positive=False) if fee_text.strip() else Decimal(0)
    fee_asset = row.asset("fee_asset", fee_asset_text) if fee_asset_text.strip() else None
    if fee > 0 and fee_asset is None:
        raise row.fail("fee_asset", "expected the asset the fee was paid in (e.g. USDT, BNB), got nothing")
    trade_id = trade_id.strip()
    if len(trade_id) > 100:
        raise row.fail("trade_id", "expected at most 100 characters")
    if _REVISION.search(trade_id):
        raise row.fail("trade_id", f"expected an id that does not end in ~re and a number (pitrader stores "
                                   f"corrected re-imports that way), got {_show(trade_id)}")
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
    row.bounded("Executed", qty, executed)
    row.value("Price", qty, price)
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
            return row.bounded("Fee", fee, text), asset
    m = _AMOUNT_ASSET.match(t)
    if not m or not _NUMBER.match(m.group(1)):
        raise row.fail("Fee", f"expected the fee followed by its asset (e.g. 0.00010000BNB), got {_show(text)}")
    return row.bounded("Fee", Decimal(m.group(1)), text), m.group(2)


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
    row.value("Price", qty, price)
    fee = row.number("Fee", v["Fee"], positive=False, commas=True) if v["Fee"].strip() else Decimal(0)
    fee_asset = row.asset("Fee Coin", v["Fee Coin"]) if v["Fee Coin"].strip() else None
    if fee > 0 and fee_asset is None:
        raise row.fail("Fee Coin", "expected the asset the fee was paid in, got nothing")
    symbol = f"{base}/{quote}"
    trade_id = _synthetic_id("bn-", seen, ts, symbol, side, qty, price, fee, fee_asset)
    return Fill(trade_id, ts, symbol, side, qty, price, fee, fee_asset, None, SOURCE)


_FORMATS = (("pitrader", NATIVE, _native), ("binance", BINANCE, _binance),
            ("binance-legacy", BINANCE_LEGACY, _binance_legacy))


def parse_file(path: str | Path, now_ms: int | None = None) -> Parsed:
    """Every row of the file as a Fill, or ``CsvError`` for the first row that is wrong.
    ``now_ms``: times after it (plus a few minutes) are refused; default the clock."""
    path = Path(path)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    try:
        # utf-8-sig: Binance's exports start with a byte-order mark.
        with path.open(newline="", encoding="utf-8-sig") as fh, bulk():
            return _parse(path, fh, now_ms)
    except FileNotFoundError:
        raise CsvError(path, 0, "(file)", "not found") from None
    except UnicodeDecodeError:
        raise CsvError(path, 0, "(file)", "expected UTF-8 text (a CSV file)") from None
    except csv.Error as exc:
        raise CsvError(path, 0, "(file)", f"expected CSV ({exc})") from None


def _control(row: _Row, cells: list[str], names: list[str] | None) -> None:
    """Refuse control characters (NUL, escapes, line breaks inside a cell) anywhere in the row."""
    if not _CONTROL.search("".join(cells)):
        return
    for i, cell in enumerate(cells):
        m = _CONTROL.search(cell)
        if m:
            char = "NUL" if m.group() == "\0" else f"U+{ord(m.group()):04X}"
            name = "header" if names is None else names[i] if i < len(names) else "(row)"
            raise row.fail(name, f"expected text without control characters, got {char} at character {m.start() + 1}"
                                 f" of column {i + 1}")


def _parse(path: Path, fh, now_ms: int) -> Parsed:
    reader = csv.reader(fh)
    header: list[str] | None = None
    for header in reader:
        if any(c.strip() for c in header):
            break
    else:
        raise CsvError(path, 1, "header", f"expected {','.join(NATIVE)}, got an empty file")
    _control(_Row(path, reader.line_num, now_ms), header, None)
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
    lines: list[int] = []
    end = reader.line_num
    for cells in reader:
        start, end = end + 1, reader.line_num  # a quoted cell may span lines: name the row's first
        if not any(c.strip() for c in cells):
            continue
        row = _Row(path, start, now_ms)
        _control(row, cells, names)
        if len(cells) != width:
            raise row.fail("(row)", f"expected {width} columns like the header, got {len(cells)}")
        try:
            fills.append(parse_row(row, [cells[i] for i in index], seen))
        except InvalidOperation:  # belt and braces: the regexes admit only valid decimals
            raise row.fail("(row)", "expected decimal numbers") from None
        lines.append(row.line)
    return Parsed(fmt, fills, lines)


# --- writing ------------------------------------------------------------------------------------

_INSERT = ("INSERT OR IGNORE INTO fills (trade_id, ts_ms, symbol, side, quantity, price, fee, fee_asset, order_id,"
           " source, created_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?)")


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
    m = _REVISION.search(trade_id)
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
            conn.execute("BEGIN IMMEDIATE")
        try:
            version = ledger_queries.last_fill_id(conn)
            # bulk: 10^5 rows of small objects (the cyclic GC would rescan them over and over);
            # CONTEXT: normalize() and products at the ledger's 40 digits, never the default 28
            with bulk(), localcontext(CONTEXT):
                entries = _load(conn) if parsed.fills else []
                plan = _plan(parsed, path, _Known(entries))
                problems = _validate(entries, plan, path, parsed.format, settings) if plan.fresh else ()
                # format(.., "f"): amounts stored as plain digits, exactly as given (1E-05 becomes 0.00001)
                rows = [(f.trade_id, f.ts_ms, f.symbol, f.side, format(f.quantity, "f"), format(f.price, "f"),
                         format(f.fee, "f"), f.fee_asset, f.order_id, f.source, now_ms) for f, _ in plan.fresh]
            if not locked:
                conn.execute("BEGIN IMMEDIATE")
                if ledger_queries.last_fill_id(conn) != version:  # the bot recorded a fill meanwhile
                    conn.execute("ROLLBACK")
                    continue
            before = conn.total_changes
            conn.executemany(_INSERT, rows)
            imported = conn.total_changes - before
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        break
    result = ImportResult(str(path), parsed.format, len(parsed.fills), imported,
                          plan.duplicates + len(rows) - imported, plan.bot_duplicates, plan.corrections, problems)
    log.info("tax import %s (%s): %d rows, %d imported (%d corrections of reversed fills), %d duplicates, "
             "%d already recorded by the bot", path, parsed.format, result.rows, imported, result.corrections,
             result.duplicates, result.bot_duplicates)
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
