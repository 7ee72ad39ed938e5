"""`pitrader tax ...` end to end through core.cli.main, with a copy of the real config.json."""
from __future__ import annotations

import csv
import io
import json
import random
import re
import sqlite3
from datetime import datetime, timezone
from decimal import Decimal as D
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from core.store import state as store
from core.cli import main
from core.config import load_config
from core.tax.importer import CsvError, import_file
from core.tax.ledger import compute
from core.tax.records import METHODS
from core.tax.report import (DISPOSAL_COLUMNS, KOINLY_COLUMNS, build, load_entries, render_json, render_text,
                             settings_from_config)

CHECKOUT = Path(__file__).resolve().parents[2]
HEADER = "timestamp,symbol,side,quantity,price,fee,fee_asset,trade_id\n"
WORKED = HEADER + ("2023-01-10T00:00:00Z,BTC/USDT,buy,1,10000,10,USDT,t1\n"
                   "2023-03-15T00:00:00Z,BTC/USDT,buy,1,20000,0,,t2\n"
                   "2024-02-01T00:00:00Z,BTC/USDT,sell,1.5,30000,15,USDT,t3\n")


def make_config(path: Path, **tax) -> Path:
    data = json.loads((CHECKOUT / "config.json").read_text())
    from strategies import registry  # keep only plugins that exist in this checkout (others may be in progress)

    data["strategies"]["enabled"] = [n for n in data["strategies"]["enabled"] if n in registry.available()]
    data["tax"].update(tax)
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def env(tmp_path):
    cfg = make_config(tmp_path / "config.json")
    state = tmp_path / "state"

    def run(*argv, config=cfg):
        return main(["--config", str(config), "--state-dir", str(state), *argv])

    run.tmp, run.state = tmp_path, state
    return run


def csv_file(tmp_path: Path, text: str, name="fills.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_worked_example_end_to_end(env, capsys):
    assert env("tax", "import", str(csv_file(env.tmp, WORKED))) == 0
    assert "imported 3 fill(s)" in capsys.readouterr().out
    assert env("tax", "report", "--year", "2024", "--format", "json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc) == ["year", "method", "jurisdiction", "currency", "totals", "disposals"]
    assert (doc["year"], doc["method"], doc["jurisdiction"], doc["currency"]) == (2024, "fifo", "us", "USD")
    assert doc["totals"] == {"proceeds": "44985.00", "cost": "20010.00", "gain": "24975.00",
                             "short_term_gain": "4995.00", "long_term_gain": "19980.00"}
    assert doc["disposals"][0] == {"trade_id": "t3", "asset": "BTC", "quantity": "1",
                                   "acquired": "2023-01-10T00:00:00Z", "sold": "2024-02-01T00:00:00Z", "proceeds": "29990.00", "cost": "10010.00",
                                   "gain": "19980.00", "term": "long"}
    assert [d["term"] for d in doc["disposals"]] == ["long", "short"]


def test_table_states_settings_and_totals(env, capsys):
    env("tax", "import", str(csv_file(env.tmp, WORKED)))
    capsys.readouterr()
    assert env("tax", "report", "--year", "2024") == 0
    out = capsys.readouterr().out
    for text in ("Tax report 2024: FIFO, jurisdiction us, USD", "44,985.00", "20,010.00", "+24,975.00",
                 "losses (USD)", "method FIFO, jurisdiction us, currency USD"):
        assert text in out, text
    assert re.search(r"short-term \(USD\) +\+4,995\.00", out) and re.search(r"long-term \(USD\) +\+19,980\.00", out)
    assert env("tax", "report", "--year", "2024", "--method", "lifo") == 0
    out = capsys.readouterr().out  # LIFO: 1 @20,000 + 0.5 @10,010 -> gain 44,985 - 25,005
    assert "LIFO" in out and "+19,980.00" in out and "25,005.00" in out


def test_german_rules_label_taxable_and_tax_free(env, capsys):
    de = make_config(env.tmp / "de.json", jurisdiction="de", currency="EUR")
    env("tax", "import", str(csv_file(env.tmp, WORKED)), config=de)
    capsys.readouterr()
    assert env("tax", "report", "--year", "2024", config=de) == 0
    out = capsys.readouterr().out
    assert re.search(r"taxable \(EUR\) +\+4,995\.00", out) and re.search(r"tax-free \(EUR\) +\+19,980\.00", out)
    assert "tax-free after 1y" in out


def test_csv_8949_and_koinly_files(env, capsys):
    env("tax", "import", str(csv_file(env.tmp, WORKED)))
    out = env.tmp / "disposals.csv"
    assert env("tax", "report", "--year", "2024", "--format", "csv", "--output", str(out)) == 0
    captured = capsys.readouterr()
    assert "wrote" in captured.err and "method FIFO" in captured.err and captured.out.count("\n") <= 1
    text = out.read_text()
    assert text.splitlines()[0] == ",".join(DISPOSAL_COLUMNS)  # data only: no comment line for importers to trip on
    assert not any(line.startswith("#") for line in text.splitlines())
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["lot_id"], r["quantity"], r["gain"], r["term"]) for r in rows] == [
        ("import:BTC/USDT:t1", "1", "19980.00", "long"), ("import:BTC/USDT:t2", "0.5", "4995.00", "short")]

    table = env.tmp / "report.txt"
    assert env("tax", "report", "--year", "2024", "--output", str(table)) == 0
    assert "Tax report 2024: FIFO, jurisdiction us, USD" in table.read_text() and "\x1b" not in table.read_text()
    capsys.readouterr()

    assert env("tax", "report", "--year", "2024", "--format", "8949") == 0
    captured = capsys.readouterr()
    assert "method FIFO, jurisdiction us, currency USD" in captured.err  # the settings: on stderr, apart
    f8949 = list(csv.reader(captured.out.splitlines()))
    assert f8949[0] == ["part", "(a) description", "(b) date acquired", "(c) date sold", "(d) proceeds",
                        "(e) cost basis", "(f) code", "(g) adjustment", "(h) gain or loss"]
    assert f8949[1:] == [
        ["I", "0.5 BTC", "03/15/2023", "02/01/2024", "14995.00", "10000.00", "", "", "4995.00"],
        ["I", "Total Part I (short-term)", "", "", "14995.00", "10000.00", "", "", "4995.00"],
        ["II", "1 BTC", "01/10/2023", "02/01/2024", "29990.00", "10010.00", "", "", "19980.00"],
        ["II", "Total Part II (long-term)", "", "", "29990.00", "10010.00", "", "", "19980.00"]]

    assert env("tax", "report", "--year", "2023", "--format", "koinly") == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == ",".join(KOINLY_COLUMNS)
    k = list(csv.DictReader(io.StringIO(text)))
    assert [(r["Date"], r["Sent Amount"], r["Sent Currency"], r["Received Amount"], r["Received Currency"],
             r["Fee Amount"], r["Fee Currency"], r["Net Worth Amount"]) for r in k] == [
        ("2023-01-10 00:00:00 UTC", "10000", "USDT", "1", "BTC", "10", "USDT", "10000.00"),
        ("2023-03-15 00:00:00 UTC", "20000", "USDT", "1", "BTC", "", "", "20000.00")]  # nothing after 2023
    koinly = env.tmp / "koinly.csv"
    assert env("tax", "report", "--year", "2024", "--format", "koinly", "--output", str(koinly)) == 0
    assert "wrote" in capsys.readouterr().err
    k = list(csv.DictReader(koinly.open()))  # 2024's sale and the 2023 purchases Koinly needs to match it
    assert [(r["Date"][:10], r["Sent Currency"], r["Received Currency"]) for r in k] == [
        ("2023-01-10", "USDT", "BTC"), ("2023-03-15", "USDT", "BTC"), ("2024-02-01", "BTC", "USDT")]


def test_bad_csv_exits_65_with_one_line_and_writes_nothing(env, capsys):
    bad = csv_file(env.tmp, WORKED + "2024-03-01T00:00:00Z,BTC/USDT,sell,0.1,abc,0,,t4\n")
    assert env("tax", "import", str(bad)) == 65
    err = capsys.readouterr().err.strip()
    assert err == f"pitrader: {bad}:5: price: expected a number > 0, got 'abc' (nothing imported)"
    conn = sqlite3.connect(store.db_path(env.state, "live"))
    assert conn.execute("SELECT COUNT(*) FROM fills").fetchone() == (0,)
    assert env("tax", "import", str(env.tmp / "missing.csv")) == 66


def test_import_refuses_rows_that_break_reports(env, capsys):
    bad = csv_file(env.tmp, WORKED + "2024-03-01T00:00:00Z,BTC/USDT,sell,1,30000,0,,t4\n"
                                     "2024-03-02T00:00:00Z,BTC/USDT,buy,1,30000,0.01,BNB,t5\n")
    assert env("tax", "import", str(bad)) == 65
    assert capsys.readouterr().err == (f"pitrader: {bad}:5: quantity: expected at most the 0.5 BTC held at that time, "
                                       f"got a sale of 1 BTC; import the fills that acquired it first (earlier rows "
                                       f"of this file count) (nothing imported)\n")
    assert not (env.state / "live.db").exists() or \
        sqlite3.connect(store.db_path(env.state, "live")).execute("SELECT COUNT(*) FROM fills").fetchone() == (0,)


def test_oversell_report_exits_65_naming_the_fill(env, capsys):
    """A ledger an older pitrader accepted: the report names the fill; reversing it fixes it."""
    env("tax", "import", str(csv_file(env.tmp, WORKED)))
    conn = sqlite3.connect(store.db_path(env.state, "live"))
    with conn:
        conn.execute("INSERT INTO fills (trade_id, ts_ms, symbol, side, quantity, price, fee, source, created_ms) "
                     "VALUES ('t4', 1709251200000, 'BTC/USDT', 'sell', '1', '30000', '0', 'import', 0)")
    conn.close()
    capsys.readouterr()
    assert env("tax", "report", "--year", "2024") == 65
    err = capsys.readouterr().err
    assert "fill #4 (import BTC/USDT sell 1 @ 30000, trade t4" in err and "only 0.5 BTC" in err
    assert env("tax", "report", "--year", "2024", "--format", "koinly") == 0  # lists fills: no lots needed
    assert "trade t4" in capsys.readouterr().out
    assert env("tax", "reverse", "4") == 0
    assert "fill #4 reversed by fill #5" in capsys.readouterr().out
    assert env("tax", "reverse", "1") == 0  # the first purchase: the sale of 1.5 BTC now oversells
    assert "note: reports fail until the ledger is fixed (1 problem(s)); the first: fill #3" in capsys.readouterr().err
    assert env("tax", "reverse", "6") == 0  # reversing the reversal brings it back
    assert "note" not in capsys.readouterr().err
    assert env("tax", "report", "--year", "2024", "--format", "json") == 0
    assert json.loads(capsys.readouterr().out)["totals"]["gain"] == "24975.00"


def test_bnb_fee_valued_from_an_old_price_is_flagged(env, capsys):
    env("tax", "import", str(csv_file(env.tmp, HEADER + "2023-01-01T00:00:00Z,BNB/USDT,buy,1,250,,,b1\n"
                                                       "2023-01-05T12:00:00Z,BTC/USDT,buy,1,17000,0.1,BNB,b2\n"
                                                       "2023-06-01T00:00:00Z,BTC/USDT,sell,1,27000,,,s1\n")))
    capsys.readouterr()
    assert env("tax", "report", "--year", "2023", "--format", "json") == 0
    out = capsys.readouterr()
    doc = json.loads(out.out)  # BTC cost 17,000 + 0.1 BNB @250; the fee itself: 25 proceeds - 25 cost
    assert [(d["asset"], d["proceeds"], d["cost"]) for d in doc["disposals"]] == [
        ("BNB", "25.00", "25.00"), ("BTC", "27000.00", "17025.00")]
    assert "1 valuation(s) used a price over a day older than the trade (oldest: BNB 250 from 4.5 days" in out.err


def test_config_is_required_and_paper_is_separate(env, capsys):
    f = str(csv_file(env.tmp, WORKED))
    assert env("tax", "import", f, config=env.tmp / "nope.json") == 78
    assert "config error" in capsys.readouterr().err
    assert env("tax", "import", "--paper", f) == 0
    assert (env.state / "paper.db").exists() and not (env.state / "live.db").exists()
    # live: no ledger at all is an error, not an empty report someone might file
    assert env("tax", "report", "--year", "2024", "--format", "json") == 66
    live, paper = store.db_path(env.state, "live"), store.db_path(env.state, "paper")
    assert f"no ledger at {live}, but there is a paper-trading one at {paper}: add --paper" in capsys.readouterr().err
    assert env("tax", "reverse", "1") == 65
    assert "add --paper" in capsys.readouterr().err
    assert env("tax", "report", "--year", "2024", "--format", "json", "--paper") == 0
    assert json.loads(capsys.readouterr().out)["totals"]["gain"] == "24975.00"


DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "ohlcv" / "1h"


def test_real_prices_all_methods_agree_on_proceeds(env, capsys):
    """Trades at real hourly closes (BTC, ETH, SOL): the three methods share proceeds, not costs."""
    rng, held, rows = random.Random(11), {}, []
    for pair in ("BTC", "ETH", "SOL"):
        with (DATA / f"{pair}_USDT.csv").open() as fh:
            candles = list(csv.DictReader(fh))
        held[pair] = D(0)
        for i, c in enumerate(candles[::24]):  # one trade a day over 2020-12 .. 2021-07
            ts = datetime.fromtimestamp(int(c["timestamp_ms"]) // 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            price = D(c["close"])
            if held[pair] > 0 and rng.random() < 0.4:
                qty = (held[pair] / 2).quantize(D("1e-6"), rounding="ROUND_DOWN")
                held[pair] -= qty
                rows.append(f"{ts},{pair}/USDT,sell,{qty},{price},{(qty * price / 1000).quantize(D('1e-8'))},USDT,"
                            f"{pair}{i}\n")
            else:
                qty = (D(100) / price).quantize(D("1e-6"))
                held[pair] += qty - qty / 1000
                rows.append(f"{ts},{pair}/USDT,buy,{qty},{price},{qty / 1000},{pair},{pair}{i}\n")
    assert env("tax", "import", str(csv_file(env.tmp, HEADER + "".join(rows)))) == 0
    capsys.readouterr()
    docs = {}
    for method in ("fifo", "lifo", "hifo"):
        assert env("tax", "report", "--year", "2021", "--method", method, "--format", "json") == 0
        docs[method] = json.loads(capsys.readouterr().out)
    for doc in docs.values():
        t, rows_ = doc["totals"], doc["disposals"]
        assert D(t["gain"]) == D(t["proceeds"]) - D(t["cost"]) == D(t["short_term_gain"]) + D(t["long_term_gain"])
        assert sum(D(d["gain"]) for d in rows_) == D(t["gain"]) and len(rows_) > 50
    assert len({doc["totals"]["proceeds"] for doc in docs.values()}) == 1
    assert len({doc["totals"]["cost"] for doc in docs.values()}) == 3  # the method matters on real prices


@st.composite
def histories(draw):
    """Small valid histories over two assets (sales never exceed holdings)."""
    rows, held, t = [], {"BTC": D(0), "ETH": D(0)}, 1_672_531_200  # 2023-01-01
    for i in range(draw(st.integers(1, 25))):
        t += draw(st.integers(3600, 40 * 86400))
        asset = draw(st.sampled_from(sorted(held)))
        price = D(draw(st.integers(100, 5_000_000))) / 100
        if held[asset] > 0 and draw(st.booleans()):
            qty = (held[asset] * draw(st.integers(1, 100)) / 100).quantize(D("1e-6"), rounding="ROUND_DOWN")
            if qty == 0:
                continue
            held[asset] -= qty
            side, fee, fee_asset = "sell", (qty * price / 1000).quantize(D("1e-6")), "USDT"
        else:
            qty = D(draw(st.integers(1, 3_000_000))) / 1_000_000
            fee, fee_asset = (qty / 1000).quantize(D("1e-6")), asset
            held[asset] += qty - fee
            side = "buy"
        stamp = datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append(f"{stamp},{asset}/USDT,{side},{qty},{price},{fee},{fee_asset},{i}\n")
    return rows


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(histories(), st.randoms(use_true_random=False), st.sampled_from(["fifo", "lifo", "hifo"]))
def test_report_is_the_same_whatever_the_import_order(tmp_path_factory, rows, rnd, method):
    tmp = tmp_path_factory.mktemp("order")
    cfg = load_config(make_config(tmp / "config.json", method=method))
    reports = []
    for attempt in range(2):
        shuffled = rows[:]
        if attempt:
            rnd.shuffle(shuffled)
        conn = store.connect_sync(tmp / f"db{attempt}.sqlite")
        cut = rnd.randint(0, len(shuffled)) if attempt else len(shuffled)
        try:  # in two batches, in any order: a first batch that sells what only the second buys is refused
            import_file(conn, csv_file(tmp, HEADER + "".join(shuffled[:cut]), f"first{attempt}.csv"))
            rest = shuffled[cut:]
        except CsvError:
            assert conn.execute("SELECT COUNT(*) FROM fills").fetchone() == (0,)  # all or nothing
            rest = shuffled
        import_file(conn, csv_file(tmp, HEADER + "".join(rest), f"rest{attempt}.csv"))
        entries = load_entries(conn)
        conn.close()
        reports.append([render_json(build(entries, year, settings_from_config(cfg), "USD")) for year in
                        (2023, 2024, 2025)])
    assert reports[0] == reports[1]


@st.composite
def careless_batches(draw):
    """Batches of rows as a careless user might write them: sales of coins never bought, BNB fees
    before any BNB price, sales bigger than the holdings, crypto-quoted pairs."""
    symbols = ("BTC/USDT", "BTC/USDT", "ETH/USDT", "BNB/USDT", "ETH/BTC")  # mostly valid: some imports pass
    batches = []
    for b in range(draw(st.integers(1, 4))):
        rows = []
        for i in range(draw(st.integers(1, 6))):
            day = draw(st.integers(0, 800))
            stamp = datetime.fromtimestamp(1_672_531_200 + day * 86400 + i, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            symbol = draw(st.sampled_from(symbols))
            qty = D(draw(st.integers(1, 400))) / 100
            price = D(draw(st.integers(1, 3_000_000))) / 100
            fee_asset = draw(st.sampled_from(["", "USDT", "BNB", symbol.split("/")[0]]))
            fee = D(draw(st.integers(1, 100))) / 10_000 if fee_asset else D(0)
            side = draw(st.sampled_from(["buy", "buy", "sell"]))
            rows.append(f"{stamp},{symbol},{side},{qty},{price},{fee},{fee_asset},b{b}r{i}\n")
        batches.append(rows)
    return batches


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(careless_batches())
def test_any_accepted_import_keeps_every_report_computable(tmp_path_factory, batches):
    """Whatever is thrown at `tax import`, each file is taken whole or not at all, and afterwards
    every method computes every year; the books balance: per coin, acquired - disposed = held."""
    tmp = tmp_path_factory.mktemp("careless")
    conn = store.connect_sync(tmp / "live.db")
    for n, rows in enumerate(batches):
        before = conn.execute("SELECT COUNT(*) FROM fills").fetchone()[0]
        try:
            res = import_file(conn, csv_file(tmp, HEADER + "".join(rows), f"b{n}.csv"))
        except CsvError as exc:
            event(f"refused: {str(exc).split(': ')[1]}")
            assert re.match(rf"^{re.escape(str(tmp))}/b{n}\.csv:\d+: \w+: expected ", str(exc))
            assert conn.execute("SELECT COUNT(*) FROM fills").fetchone()[0] == before
            continue
        assert res.imported == len(rows) and res.problems == ()
        event("accepted")
        entries = load_entries(conn)
        for method in METHODS:
            cfg = load_config(make_config(tmp / "config.json", method=method))
            result = compute(entries, settings_from_config(cfg))
            for year in (2023, 2024, 2025):
                for fmt in ("json", "csv", "8949", "koinly"):
                    render_text(build(entries, year, settings_from_config(cfg), "USD"), fmt)
            for asset in {lot.asset for lot in result.lots}:
                acquired = sum(lot.quantity for lot in result.lots if lot.asset == asset)
                disposed = sum(d.quantity for d in result.disposals if d.asset == asset)
                held = sum(lot.remaining for lot in result.lots if lot.asset == asset)
                assert acquired - disposed == held >= 0
    conn.close()


@pytest.mark.parametrize("price", ["1e308", "1e999999", "9" * 5000])
def test_hostile_price_is_one_line_exit_65_and_reports_still_work(env, capsys, price):
    """Before: accepted, and every `tax report` afterwards failed with decimal.InvalidOperation (exit 70)."""
    assert env("tax", "import", str(csv_file(env.tmp, WORKED))) == 0
    bad = csv_file(env.tmp, HEADER + f"2024-03-01T00:00:00Z,ETH/USDT,buy,1,{price},0,,big\n", "bad.csv")
    capsys.readouterr()
    assert env("tax", "import", str(bad)) == 65
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"pitrader: {bad}:2: price: expected a number at most ")
    assert err.endswith("(nothing imported)\n") and len(err) < 300
    assert env("tax", "report", "--year", "2024", "--format", "json") == 0
    assert json.loads(capsys.readouterr().out)["totals"]["gain"] == "24975.00"
