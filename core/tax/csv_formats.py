"""Reading CSV files of trades into fills: our own format and Binance's trade-history exports.

Parsing only: every row is checked on its own here (numbers up to 1e15 with at most 18 decimals,
a quantity x price up to 1e15, times from 2009-01-03 to now, no control characters such as NUL),
and the first bad row is a ``CsvError`` (``FILE:LINE: field: what is expected``). Whether the rows
fit the ledger, and writing them, is ``core.tax.importer``'s job.

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
import re
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from core.models import BUY, SELL, Fill
from core.tax.ledger import MAX_AMOUNT, MAX_VALUE, bulk
from core.tax.periods import iso, ms_from_iso
from core.timeframes import MINUTE_MS

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
FUTURE_SLACK_MS = 5 * MINUTE_MS  # clocks differ a little; a trade from the future is a wrong time zone or a typo
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
REVISION = re.compile(r"~re(\d+)$")  # the stored trade id of a corrected re-import: ID~re2, ID~re3, ...


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
    if REVISION.search(trade_id):
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
