"""CSV import into the append-only fills ledger: formats, validation, duplicates, reversals."""
from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal as D
from pathlib import Path

import pytest

from core.store import state as store
from core.tax.ledger import compute
from core.tax.periods import ms_from_iso
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
           "2021-05-01 08:00:00,BUSDUSDT,BUY,1.0001,100.00000000BUSD,100.01000000USDT,0.10000000BUSD\n"
           "2021-05-01 09:00:00,BTCUSDT,BUY,55000,0.01000000BTC,550.00000000USDT,0.00001000BTC\n"
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
    assert got[:2] == [("BUSD/USDT", "buy", D(100), D("1.0001"), D("0.1"), "BUSD"),
                       ("BTC/USDT", "buy", D("0.01"), D(55000), D("0.00001"), "BTC")]  # holdings for what follows
    assert got[2:] == [
        ("BNB/USDT", "buy", D("1"), D("600.5"), D("0.00075"), "BNB"),
        ("BTC/USDT", "buy", D("0.001"), D("56000"), D("0.0000375"), "BNB"),
        ("1INCH/USDT", "buy", D("1000"), D("5.1"), D("1"), "1INCH"),  # split where the amounts' assets say
        ("BTC/BUSD", "sell", D("0.0005"), D("57000"), D("0.0285"), "BUSD"),  # not BTCB/USD
        ("ETH/BTC", "buy", D("0.02"), D("0.05"), D("0.00002"), "ETH"),
        ("ETH/BTC", "buy", D("0.02"), D("0.05"), D("0.00002"), "ETH"),
        ("BTC/USDT", "sell", D("0.001"), D("58000"), D("0.058"), "USDT"),
    ]
    assert parsed.fills[3].ts_ms == ms_from_iso("2021-05-02T11:23:45Z")
    assert len({x.trade_id for x in parsed.fills}) == 9 and all(x.source == "import" for x in parsed.fills)
    assert import_file(db, f).imported == 9
    res = import_file(db, f)
    assert (res.imported, res.duplicates) == (0, 9)  # the synthesized ids are stable


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
    assert (res.imported, res.bot_duplicates) == (7, 2)
    own = write(tmp_path, HEADER + "2021-05-06T08:00:00Z,BTC/USDT,sell,0.001,58000,0.058,USDT,28457\n", "own.csv")
    assert import_file(db, own).bot_duplicates == 1  # same exchange trade id as the bot's fill
    assert count(db) == 9
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


def legacy_insert(conn, *fills: Fill) -> None:
    """Rows an older pitrader accepted without checking the ledger (or the bot recorded)."""
    conn.executemany("INSERT INTO fills (trade_id, ts_ms, symbol, side, quantity, price, fee, fee_asset, order_id,"
                     " source, created_ms) VALUES (?,?,?,?,?,?,?,?,?,?,0)",
                     [(f.trade_id, f.ts_ms, f.symbol, f.side, str(f.quantity), str(f.price), str(f.fee), f.fee_asset,
                       f.order_id, f.source) for f in fills])


def fill(ts: str, symbol: str, side: str, qty, price, fee=0, fee_asset=None, trade_id="x", source="import") -> Fill:
    return Fill(trade_id, ms_from_iso(ts), symbol, side, D(qty), D(price), D(fee), fee_asset, None, source)


def test_reversal_entries_cancel_and_restore(db, tmp_path):
    import_file(db, write(tmp_path, HEADER + GOOD))
    legacy_insert(db, fill("2024-02-02T00:00:00Z", "BTC/USDT", "sell", 5, 30000, trade_id="oops"))
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


# --- the whole ledger is checked at import (issue 14 item 8) ------------------------------------

def test_a_row_that_would_break_every_report_is_refused(db, tmp_path):
    """Selling more than is held, or paying a fee in a coin no trade gives a price for: refused
    with FILE:LINE and nothing written (before, accepted and every report failed afterwards)."""
    oversell = write(tmp_path, HEADER + GOOD + "2024-02-02T00:00:00Z,BTC/USDT,sell,0.6,30000,0,,t4\n")
    with pytest.raises(CsvError) as exc:
        import_file(db, oversell)
    assert str(exc.value) == (f"{oversell}:5: quantity: expected at most the 0.5 BTC held at that time, got a sale "
                              f"of 0.6 BTC; import the fills that acquired it first (earlier rows of this file count)")
    bnb = write(tmp_path, HEADER + "2023-01-05T12:00:00Z,BTC/USDT,buy,1,17000,0.1,BNB,b2\n", "bnb.csv")
    with pytest.raises(CsvError, match=rf"^{bnb}:2: fee_asset: expected a price for BNB: valuing the fee of 0.1 BNB"):
        import_file(db, bnb)
    assert count(db) == 0
    # the purchase later in the file (or in an earlier import) makes the same rows fine
    assert import_file(db, write(tmp_path, HEADER + "2024-02-02T00:00:00Z,BTC/USDT,sell,0.5,30000,0,,t4\n" + GOOD,
                                 "any-order.csv")).imported == 4
    assert import_file(db, write(tmp_path, HEADER + "2022-12-01T00:00:00Z,BNB/USDT,buy,1,250,,,b1\n", "b1.csv"))
    assert import_file(db, bnb).imported == 1
    compute(load_entries(db))


def test_a_row_that_breaks_a_fill_already_in_the_ledger_is_refused(db, tmp_path):
    import_file(db, write(tmp_path, HEADER + GOOD))  # 2 BTC bought, 1.5 sold in 2024-02
    early = write(tmp_path, HEADER + "2023-06-01T00:00:00Z,BTC/USDT,sell,1,25000,0,,early\n", "early.csv")
    with pytest.raises(CsvError) as exc:
        import_file(db, early)  # fine on its own date, but leaves too little for fill #3 afterwards
    assert str(exc.value).startswith(f"{early}:2: quantity: expected to leave enough BTC for the fills after it, "
                                     f"but with this row fill #3 (import BTC/USDT sell 1.5 @ 30000, trade t3")
    assert "sells 1.5 BTC but only 1 BTC is held at that time" in str(exc.value) and count(db) == 3


def test_problems_already_in_the_ledger_do_not_block_the_fix(db, tmp_path):
    legacy_insert(db, fill("2024-02-02T00:00:00Z", "BTC/USDT", "sell", 1, 30000, trade_id="s1"))
    res = import_file(db, write(tmp_path, HEADER + "2024-01-01T00:00:00Z,ETH/USDT,buy,1,2000,,,e1\n"))
    assert res.imported == 1 and len(res.problems) == 1 and "sells 1 BTC but only 0 BTC" in res.problems[0]
    res = import_file(db, write(tmp_path, HEADER + "2023-01-01T00:00:00Z,BTC/USDT,buy,1,16000,,,b1\n", "fix.csv"))
    assert (res.imported, res.problems) == (1, ())
    assert compute(load_entries(db)).disposals[0].quantity == 1


# --- trade ids: corrections after a reversal, conflicts ----------------------------------------

def test_a_reversed_fill_can_be_imported_again_corrected(db, tmp_path):
    """After `tax reverse N` the corrected row with the same trade id is imported (before: skipped
    as a duplicate, so the mistake could not be fixed)."""
    wrong = write(tmp_path, HEADER + GOOD.replace("sell,1.5,30000", "sell,1.5,3000"))
    import_file(db, wrong)
    t3 = db.execute("SELECT id FROM fills WHERE trade_id='t3'").fetchone()[0]
    add_reversal(db, t3)
    fixed = write(tmp_path, HEADER + GOOD, "fixed.csv")
    res = import_file(db, fixed)
    assert (res.imported, res.corrections, res.duplicates) == (1, 1, 2)
    assert db.execute("SELECT price FROM fills WHERE trade_id='t3~re2'").fetchone() == ("30000",)
    assert sum(d.gain for d in compute(load_entries(db)).disposals) == D(24975)
    again = import_file(db, fixed)  # the correction is now the fill: the same row is a duplicate
    assert (again.imported, again.duplicates) == (0, 3)
    add_reversal(db, db.execute("SELECT id FROM fills WHERE trade_id='t3~re2'").fetchone()[0])
    assert import_file(db, wrong).corrections == 1  # and so on: ~re3
    assert db.execute("SELECT price FROM fills WHERE trade_id='t3~re3'").fetchone() == ("3000",)
    with pytest.raises(CsvError, match=r":2: trade_id: expected an id that does not end in ~re and a number"):
        import_file(db, write(tmp_path, HEADER + "2023-01-10T00:00:00Z,BTC/USDT,buy,1,1,0,,t3~re9\n", "re.csv"))


def test_a_trade_id_reused_with_other_contents_is_a_conflict(db, tmp_path):
    import_file(db, write(tmp_path, HEADER + GOOD))
    other = write(tmp_path, HEADER + "2023-01-10T00:00:00Z,BTC/USDT,buy,1,10500,10,USDT,t1\n", "other.csv")
    with pytest.raises(CsvError) as exc:
        import_file(db, other)
    assert str(exc.value) == (f"{other}:2: trade_id: expected the contents of fill #1, imported with trade id 't1' "
                              f"(price 10000 vs 10500), or another trade id; to correct that fill run `pitrader tax "
                              f"reverse 1`, then import this row again")
    same = write(tmp_path, HEADER + "2023-01-10T00:00:00.000+00:00,BTC/USDT,BUY,1.000,1E4,10,usdt,t1\n", "same.csv")
    assert import_file(db, same).duplicates == 1  # the same trade written differently: harmless
    twice = write(tmp_path, HEADER + "2023-01-11T00:00:00Z,BTC/USDT,buy,1,1,0,,t9\n"
                                     "2023-01-11T00:00:00Z,BTC/USDT,buy,2,1,0,,t9\n", "twice.csv")
    with pytest.raises(CsvError, match=r"twice.csv:3: trade_id: expected another trade id or the same contents as "
                                       r"line 2, which has trade id 't9' too \(quantity 1 vs 2\)"):
        import_file(db, twice)
    assert count(db) == 3


def test_a_bot_trade_id_with_other_contents_is_a_conflict(db, tmp_path):
    legacy_insert(db, fill("2021-05-02T11:23:45.120Z", "BTC/USDT", "buy", "0.001", 56000, trade_id="28401",
                           source="bot"))
    clash = write(tmp_path, HEADER + "2021-05-02T11:23:45Z,BTC/USDT,buy,0.002,56000,0,,28401\n")
    with pytest.raises(CsvError, match=r":2: trade_id: expected the trade the bot recorded as fill #1 with trade id "
                                       r"'28401' \(quantity 0.001 vs 0.002\), or another trade id"):
        import_file(db, clash)


# --- hostile input (issue 15 item 9) ------------------------------------------------------------

@pytest.mark.parametrize("line, expected", [
    ("2023-01-01T00:00:00Z,BTC/USDT,buy,1,1e308,0,,x", "price: expected a number at most 1,000,000,000,000,000 "
                                                       "(1e15), got '1e308'"),
    ("2023-01-01T00:00:00Z,BTC/USDT,buy,1,1e999999,0,,x", "price: expected a number at most"),
    ("2023-01-01T00:00:00Z,BTC/USDT,buy," + "9" * 5000 + ",1,0,,x", "quantity: expected a number at most"),
    ("2023-01-01T00:00:00Z,BTC/USDT,buy,1,0." + "1" * 5000 + ",0,,x", "price: expected at most 18 decimal places"),
    ("2023-01-01T00:00:00Z,BTC/USDT,buy,1,1e-19,0,,x", "price: expected at most 18 decimal places, got '1e-19'"),
    ("2023-01-01T00:00:00Z,BTC/USDT,buy,1,1,1e-999999,BNB,x", "fee: expected at most 18 decimal places"),
    ("2023-01-01T00:00:00Z,BTC/USDT,buy,1e10,1e10,0,,x", "price: expected quantity x price at most "
                                                         "1,000,000,000,000,000 (1e15), got 1.000e+20"),
    ("2100-01-01T00:00:00Z,BTC/USDT,buy,1,1,0,,x", "timestamp: expected a time that is not in the future (now is "),
    ("9999-12-31T23:59:59-01:00,BTC/USDT,buy,1,1,0,,x", "timestamp: expected a time that is not in the future"),
    ("2023-02-30T00:00:00Z,BTC/USDT,buy,1,1,0,,x", "timestamp: expected an ISO-8601 UTC time"),
    ("2008-12-31T00:00:00Z,BTC/USDT,buy,1,1,0,,x", "timestamp: expected a time on or after 2009-01-03"),
    ("2023-01-01T00:00:00Z,BTC/USDT,buy,1,1,0,,x\x00y", "trade_id: expected text without control characters, got "
                                                        "NUL at character 2 of column 8"),
    ("2023-01-01T00:00:00Z,BTC/USDT\x00,buy,1,1,0,,x", "symbol: expected text without control characters, got NUL"),
    ("2023-01-01T00:00:00Z,BTC/USDT,buy,1,1,0,,\"x\ny\"", "trade_id: expected text without control characters, "
                                                          "got U+000A"),
])
def test_hostile_values_are_refused_with_file_and_line(db, tmp_path, line, expected):
    f = write(tmp_path, HEADER + GOOD + line + "\n")
    with pytest.raises(CsvError) as exc:
        import_file(db, f)
    assert str(exc.value).startswith(f"{f}:5: {expected}"), str(exc.value)
    assert count(db) == 0


def test_hostile_binance_amounts_and_header(db, tmp_path):
    f = write(tmp_path, "Date(UTC),Pair,Side,Price,Executed,Amount,Fee\n"
                        "2021-05-02 11:23:45,BTCUSDT,BUY,56000,1E308BTC,56USDT,0\n", "bn.csv")
    with pytest.raises(CsvError, match=r"bn.csv:2: Executed: expected a number at most"):
        import_file(db, f)
    f = write(tmp_path, "Date(UTC),Pair,Side,Price,Executed,Amount,Fee\n"
                        "2021-05-02 11:23:45,BTCUSDT,BUY,56000,0.001BTC,56USDT,0.0000000000000000001BNB\n", "fee.csv")
    with pytest.raises(CsvError, match=r"fee.csv:2: Fee: expected at most 18 decimal places"):
        import_file(db, f)
    f = write(tmp_path, HEADER.replace("trade_id", "trade_id\x00") + GOOD, "hdr.csv")
    with pytest.raises(CsvError, match=r"hdr.csv:1: header: expected text without control characters"):
        import_file(db, f)
    assert count(db) == 0


def test_a_fill_out_of_bounds_already_in_the_ledger_is_named_not_a_crash(db, tmp_path):
    """Rows an older pitrader accepted (price 1e308, a 5,000-digit number): the report names the
    fill (exit 65 in the CLI), where it used to raise decimal.InvalidOperation (exit 70)."""
    from core.tax.records import InvalidFillError, Settings
    from core.tax.report import build, render_text

    import_file(db, write(tmp_path, HEADER + GOOD))
    for n, price in enumerate(("1e308", "1e999999", "9" * 5000)):
        legacy_insert(db, fill("2024-03-01T00:00:00Z", "ETH/USDT", "buy", 1, price, trade_id=f"big{n}"))
        with pytest.raises(InvalidFillError, match=rf"fill #{4 + 2 * n} .*expected quantity, price and fee at most"):
            build(load_entries(db), 2024, Settings(), "USD")
        add_reversal(db, 4 + 2 * n)
    for fmt in ("table", "csv", "8949", "koinly", "json"):
        assert render_text(build(load_entries(db), 2024, Settings(), "USD"), fmt)


def test_a_fill_recorded_while_the_file_is_checked_is_taken_into_account(db, tmp_path, monkeypatch):
    """The ledger is checked outside the write lock (the bot must be able to record fills), so a
    fill that lands meanwhile makes the import check again: here the bot sold the BTC the file
    sells, and the second check refuses the file."""
    import core.tax.importer as importer

    import_file(db, write(tmp_path, HEADER + GOOD))  # 0.5 BTC left
    path = db.execute("PRAGMA database_list").fetchone()[2]
    real, calls = importer._validate, []

    def validate_while_the_bot_trades(*args):
        calls.append(1)
        if len(calls) == 1:
            other = store.connect_sync(path)
            legacy_insert(other, fill("2024-02-03T00:00:00Z", "BTC/USDT", "sell", "0.4", 31000, trade_id="99",
                                      source="bot"))
            other.close()
        return real(*args)

    monkeypatch.setattr(importer, "_validate", validate_while_the_bot_trades)
    late = write(tmp_path, HEADER + "2024-02-04T00:00:00Z,BTC/USDT,sell,0.3,32000,0,,t5\n", "late.csv")
    with pytest.raises(CsvError, match=r"late.csv:2: quantity: expected at most the 0.1 BTC held at that time"):
        import_file(db, late)
    assert len(calls) == 2 and count(db) == 4  # checked twice; the bot's fill is in, the file's row is not
    ok = write(tmp_path, HEADER + "2024-02-04T00:00:00Z,BTC/USDT,sell,0.1,32000,0,,t5\n", "ok.csv")
    assert import_file(db, ok).imported == 1 and len(calls) == 3


def test_a_ledger_that_keeps_changing_is_checked_under_the_write_lock(db, tmp_path, monkeypatch):
    import core.tax.importer as importer

    path = db.execute("PRAGMA database_list").fetchone()[2]
    real, calls = importer._validate, []

    def validate_while_the_bot_trades(*args):
        calls.append(db.in_transaction)
        if len(calls) < importer._ATTEMPTS:
            other = store.connect_sync(path)
            legacy_insert(other, fill(f"2023-01-0{len(calls)}T00:00:00Z", "ETH/USDT", "buy", 1, 1000,
                                      trade_id=str(len(calls)), source="bot"))
            other.close()
        return real(*args)

    monkeypatch.setattr(importer, "_validate", validate_while_the_bot_trades)
    assert import_file(db, write(tmp_path, HEADER + GOOD)).imported == 3
    assert calls == [False] * (importer._ATTEMPTS - 1) + [True] and count(db) == importer._ATTEMPTS - 1 + 3
