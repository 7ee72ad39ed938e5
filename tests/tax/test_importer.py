"""CSV import into the append-only fills ledger: formats, validation, duplicates, reversals."""
from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal as D
from pathlib import Path

import pytest

from core.store import state as store
from core.tax.ledger import compute, ms_from_iso
from core.models import Fill
from core.tax.importer import CsvError, ReversalError, add_reversal, import_file, parse_file
from core.tax.report import load_entries

HEADER = "timestamp,symbol,side,quantity,price,fee,fee_asset,trade_id\n"
GOOD = ("2023-01-10T00:00:00Z,BTC/USDT,buy,1,10000,10,USDT,t1\n"
        "2023-03-15T00:00:00Z,BTC/USDT,buy,1.00000000,20000,0,,t2\n"
        "2024-02-01T00:00:00Z,BTC/USDT,sell,1.5,30000,15,USDT,t3\n")


@pytest.fixture
def db(tmp_path):
    conn = store.connect_sync(store.db_path(tmp_path / "state", "live"))
    yield conn
    conn.close()


def write(tmp_path: Path, text: str, name: str = "fills.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def count(conn) -> int:
    return conn.execute("SELECT COUNT(*) FROM fills").fetchone()[0]


def test_import_then_reimport_skips_duplicates(db, tmp_path):
    f = write(tmp_path, HEADER + GOOD)
    res = import_file(db, f, now_ms=1)
    assert (res.format, res.rows, res.imported, res.duplicates, res.bot_duplicates) == ("pitrader", 3, 3, 0, 0)
    rows = db.execute("SELECT trade_id, ts_ms, symbol, side, quantity, price, fee, fee_asset, source FROM fills"
                      " ORDER BY id").fetchall()
    assert rows[1] == ("t2", ms_from_iso("2023-03-15T00:00:00Z"), "BTC/USDT", "buy", "1.00000000", "20000", "0",
                       None, "import")  # amounts kept exactly as TEXT
    again = import_file(db, f, now_ms=2)
    assert (again.imported, again.duplicates) == (0, 3)
    assert count(db) == 3


@pytest.mark.parametrize("line, expected", [
    ("2023-13-01T00:00:00Z,BTC/USDT,buy,1,1,0,,x", "timestamp: expected an ISO-8601 UTC time"),
    ("2023-01-01T00:00:00Z,BTCUSDT,buy,1,1,0,,x", "symbol: expected BASE/QUOTE such as BTC/USDT, got 'BTCUSDT'"),
    ("2023-01-01T00:00:00Z,BTC/USDT,hold,1,1,0,,x", "side: expected buy or sell, got 'hold'"),
    ("2023-01-01T00:00:00Z,BTC/USDT,buy,-1,1,0,,x", "quantity: expected a number > 0, got '-1'"),
    ("2023-01-01T00:00:00Z,BTC/USDT,buy,1,0,0,,x", "price: expected a number > 0, got '0'"),
    ("2023-01-01T00:00:00Z,BTC/USDT,buy,1,\"1,5\",0,,x", "price: expected a number > 0, got '1,5'"),
    ("2023-01-01T00:00:00Z,BTC/USDT,buy,1,1,0.1,,x", "fee_asset: expected the asset the fee was paid in"),
    ("2023-01-01T00:00:00Z,BTC/USDT,buy,1,1,0", "(row): expected 8 columns like the header, got 6"),
])
def test_bad_row_names_file_line_field_and_writes_nothing(db, tmp_path, line, expected):
    f = write(tmp_path, HEADER + GOOD + "\n" + line + "\n")  # a blank line before it: line 6 all the same
    with pytest.raises(CsvError) as exc:
        import_file(db, f)
    assert str(exc.value).startswith(f"{f}:6: {expected}")
    assert count(db) == 0


def test_header_must_be_a_known_format(db, tmp_path):
    f = write(tmp_path, "date,pair,amount\n2023-01-01,BTCUSDT,1\n")
    with pytest.raises(CsvError, match=r":1: header: expected timestamp,symbol,side"):
        import_file(db, f)
    with pytest.raises(CsvError, match=r":1: header: expected .*empty file"):
        parse_file(write(tmp_path, "\n\n", "empty.csv"))


def test_scientific_notation_is_read_exactly(db, tmp_path):
    f = write(tmp_path, HEADER + "2024-02-01T13:45:00Z,SHIB/USDT,buy,2.5E+6,1E-05,2.5e3,SHIB,a\n")
    (fill,) = parse_file(f).fills
    assert (fill.quantity, fill.price, fill.fee) == (D(2500000), D("0.00001"), D(2500))
    import_file(db, f)
    assert db.execute("SELECT quantity, price, fee FROM fills").fetchone() == ("2500000", "0.00001", "2500")


def test_timestamps_are_utc(tmp_path):
    f = write(tmp_path, HEADER + "2024-02-01T13:45:00Z,BTC/USDT,buy,1,1,,,a\n"
                                  "2024-02-01T15:45:00+02:00,BTC/USDT,buy,1,1,,,b\n"
                                  "2024-02-01 13:45:00,BTC/USDT,buy,1,1,,,c\n"
                                  "2024-02-01,BTC/USDT,buy,1,1,,,d\n")
    got = [f.ts_ms for f in parse_file(f).fills]
    noon = ms_from_iso("2024-02-01T13:45:00Z")
    assert got == [noon, noon, noon, ms_from_iso("2024-02-01T00:00:00Z")]


def test_rows_without_trade_id_get_a_stable_one(db, tmp_path):
    rows = "2023-01-01T00:00:00Z,ETH/USDT,buy,1,100,,,\n" * 2 + "2023-01-02T00:00:00Z,ETH/USDT,buy,1,100,,,\n"
    f = write(tmp_path, HEADER + rows)
    ids = [x.trade_id for x in parse_file(f).fills]
    assert ids[0] != ids[1] and ids[1] == ids[0] + "-2" and len(set(ids)) == 3  # two identical trades stay two
    assert import_file(db, f).imported == 3
    assert import_file(db, f).duplicates == 3


# Binance spot "Trade History" export: BOM, assets glued to the amounts, thousands separators.
BINANCE = ("\ufeffDate(UTC),Pair,Side,Price,Executed,Amount,Fee\n"
           "2021-05-01 10:00:00,BNBUSDT,BUY,600.5,1.00000000BNB,600.50000000USDT,0.00075000BNB\n"
           "2021-05-02 11:23:45,BTCUSDT,BUY,\"56,000.00\",0.00100000BTC,56.00000000USDT,0.00003750BNB\n"
           "2021-05-03 12:00:00,1INCHUSDT,BUY,5.1,\"1,000.001INCH\",5100.00000000USDT,1.000001INCH\n"
           "2021-05-04 12:00:00,BTCBUSD,SELL,57000,0.00050000BTC,28.50000000BUSD,0.02850000BUSD\n"
           "2021-05-05 12:00:00,ETHBTC,BUY,0.05,0.02000000ETH,0.00100000BTC,0.00002000ETH\n"
           "2021-05-05 12:00:00,ETHBTC,BUY,0.05,0.02000000ETH,0.00100000BTC,0.00002000ETH\n"
           "2021-05-06 08:00:00,BTCUSDT,SELL,58000,0.00100000BTC,58.00000000USDT,0.05800000USDT\n")


def test_binance_trade_history_export(db, tmp_path):
    f = write(tmp_path, BINANCE, "binance.csv")
    parsed = parse_file(f)
    assert parsed.format == "binance"
    got = [(x.symbol, x.side, x.quantity, x.price, x.fee, x.fee_asset) for x in parsed.fills]
    assert got == [
        ("BNB/USDT", "buy", D("1"), D("600.5"), D("0.00075"), "BNB"),
        ("BTC/USDT", "buy", D("0.001"), D("56000"), D("0.0000375"), "BNB"),
        ("1INCH/USDT", "buy", D("1000"), D("5.1"), D("1"), "1INCH"),  # split where the amounts' assets say
        ("BTC/BUSD", "sell", D("0.0005"), D("57000"), D("0.0285"), "BUSD"),  # not BTCB/USD
        ("ETH/BTC", "buy", D("0.02"), D("0.05"), D("0.00002"), "ETH"),
        ("ETH/BTC", "buy", D("0.02"), D("0.05"), D("0.00002"), "ETH"),
        ("BTC/USDT", "sell", D("0.001"), D("58000"), D("0.058"), "USDT"),
    ]
    assert parsed.fills[1].ts_ms == ms_from_iso("2021-05-02T11:23:45Z")
    assert len({x.trade_id for x in parsed.fills}) == 7 and all(x.source == "import" for x in parsed.fills)
    assert import_file(db, f).imported == 7
    res = import_file(db, f)
    assert (res.imported, res.duplicates) == (0, 7)  # the synthesized ids are stable


def test_binance_bad_amount_and_bare_number_variant(db, tmp_path):
    bad = write(tmp_path, "Date(UTC),Pair,Side,Price,Executed,Amount,Fee\n"
                          "2021-05-02 11:23:45,BTCUSDT,BUY,56000,0.001ETH,56USDT,0\n", "bad.csv")
    with pytest.raises(CsvError, match=r"bad.csv:2: Executed: expected the executed quantity"):
        import_file(db, bad)
    bare = write(tmp_path, "Date(UTC),Pair,Side,Price,Executed,Amount,Fee\n"
                           "2021-05-02 11:23:45,ETHBTC,SELL,0.05,2,0.1,0.0001BTC\n", "bare.csv")
    (fill,) = parse_file(bare).fills
    assert (fill.symbol, fill.quantity, fill.fee, fill.fee_asset) == ("ETH/BTC", D(2), D("0.0001"), "BTC")


def test_binance_legacy_export(tmp_path):
    f = write(tmp_path, "Date(UTC),Market,Type,Price,Amount,Total,Fee,Fee Coin\n"
                        "2019-03-01 09:10:11,BNBBTC,SELL,0.0027,10,0.027,0.0075,BNB\n"
                        "2019-03-02 09:10:11,BTCUSDT,BUY,3800,0.5,1900,0.0005,BTC\n", "legacy.csv")
    parsed = parse_file(f)
    assert parsed.format == "binance-legacy"
    assert [(x.symbol, x.side, x.quantity, x.fee_asset) for x in parsed.fills] == [
        ("BNB/BTC", "sell", D(10), "BNB"), ("BTC/USDT", "buy", D("0.5"), "BTC")]


def test_trades_the_bot_already_recorded_are_not_imported_twice(db, tmp_path):
    path = store.db_path(tmp_path / "state", "live")
    bot = Fill("28457", ms_from_iso("2021-05-06T08:00:00.734Z"), "BTC/USDT", "sell", D("0.001"), D("58000"),
               D("0.058"), "USDT", "cid-1", "bot")
    buy = Fill("28401", ms_from_iso("2021-05-02T11:23:45.120Z"), "BTC/USDT", "buy", D("0.001"), D("56000"),
               D("0.0000375"), "BNB", "cid-0", "bot")

    async def record():
        async with store.Store.open(path) as s:
            async with s.transaction() as conn:
                for fill in (buy, bot):
                    assert await s.add_fill(fill, 1, conn)

    asyncio.run(record())
    res = import_file(db, write(tmp_path, BINANCE, "binance.csv"))
    assert (res.imported, res.bot_duplicates) == (5, 2)
    own = write(tmp_path, HEADER + "2021-05-06T08:00:00Z,BTC/USDT,sell,0.001,58000,0.058,USDT,28457\n", "own.csv")
    assert import_file(db, own).bot_duplicates == 1  # same exchange trade id as the bot's fill
    assert count(db) == 7
    # two equal partial fills in one second, the bot recorded one of them: the other is imported
    twice = write(tmp_path, "Date(UTC),Pair,Side,Price,Executed,Amount,Fee\n" +
                  "2021-05-02 11:23:45,BTCUSDT,BUY,56000,0.001BTC,56USDT,0.0000375BNB\n" * 2, "twice.csv")
    res = import_file(db, twice)
    assert (res.imported, res.bot_duplicates) == (1, 1)


def test_fills_are_append_only(db, tmp_path):
    import_file(db, write(tmp_path, HEADER + GOOD))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE fills SET quantity='2' WHERE trade_id='t1'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM fills")
    assert db.execute("SELECT quantity FROM fills WHERE trade_id='t1'").fetchone() == ("1",)
    assert count(db) == 3


def test_reversal_entries_cancel_and_restore(db, tmp_path):
    import_file(db, write(tmp_path, HEADER + GOOD + "2024-02-02T00:00:00Z,BTC/USDT,sell,5,30000,0,,oops\n"))
    oops = db.execute("SELECT id FROM fills WHERE trade_id='oops'").fetchone()[0]
    with pytest.raises(Exception, match=f"fill #{oops} .*sells 5 BTC but only 0.5 BTC"):
        compute(load_entries(db))
    rev = add_reversal(db, oops, now_ms=5)
    assert db.execute("SELECT reverses, trade_id, source FROM fills WHERE id=?", (rev,)).fetchone() == \
        (oops, f"reversal:{oops}:1", "import")
    assert len(compute(load_entries(db)).disposals) == 2
    with pytest.raises(ReversalError, match="already reversed"):
        add_reversal(db, oops)
    with pytest.raises(ReversalError, match="no such fill"):
        add_reversal(db, 999)
    add_reversal(db, rev)  # reversing the reversal brings the fill back
    with pytest.raises(Exception, match="sells 5 BTC"):
        compute(load_entries(db))
