"""Tax ledger benchmark: import 100,000 fills from CSV, then a FIFO report over them (target < 10 s).

Fills are generated (seeded) at real prices: hourly closes of 20 pairs from
../shared/data/ohlcv/1h and BNB from ../shared/data/ohlcv/1m (for BNB-paid fees while BNB prices
exist). Sales never exceed holdings, fees are 0.1 % in USDT, in the bought asset, or in BNB.

Prints, as medians of --repeat runs on fresh databases:
  * in-process: CSV parse alone (the reference), import (parse + one-transaction insert), ledger +
    report (JSON, every disposal), and their ratio to the parse;
  * the real command lines: `pitrader tax import FILE` then `pitrader tax report --year 2021
    --format json --output ...` as subprocesses (what a user waits for, interpreter start included).

Run: .venv/bin/python benchmarks/bench_ledger.py [--fills 100000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.store import state as store  # noqa: E402
from core.config import load_config  # noqa: E402
from core.tax.importer import import_file, parse_file  # noqa: E402
from core.tax.report import build, load_entries, render_json, settings_from_config  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ohlcv"
PAIRS = ("BTC", "ETH", "ADA", "DOT", "LINK", "LTC", "XRP", "SOL", "DOGE", "UNI", "MATIC", "AVAX", "ATOM", "FIL",
         "TRX", "EOS", "XLM", "VET", "THETA", "AAVE")
HOUR = 3_600_000


def closes(path: Path) -> dict[int, str]:
    with path.open() as fh:
        return {int(r["timestamp_ms"]): r["close"] for r in csv.DictReader(fh)}


def round_sig(x: Decimal, digits: int = 6) -> Decimal:
    return x.quantize(Decimal(1).scaleb(x.adjusted() - digits + 1))


def generate(n: int, out: Path, seed: int = 7) -> dict:
    rng = random.Random(seed)
    series = {p: closes(DATA / "1h" / f"{p}_USDT.csv") for p in PAIRS}
    bnb = closes(DATA / "1m" / "BNB_USDT.csv")
    bnb_first, bnb_last = min(bnb), max(bnb)
    hours = sorted(set().union(*series.values()))
    per_hour = n / len(hours)
    held = {p: Decimal(0) for p in PAIRS}
    held_bnb = Decimal(0)
    rows, k, fees = [], 0, {"USDT": 0, "base": 0, "BNB": 0}
    for h in hours:
        count = int(per_hour) + (rng.random() < per_hour % 1)
        for ts in sorted(h + rng.randrange(HOUR) for _ in range(count)):  # holdings follow time order
            if len(rows) >= n:
                break
            minute = ts - ts % 60_000
            if bnb_first <= minute <= bnb_last and minute in bnb and (held_bnb < 1 or rng.random() < 0.01):
                price = round_sig(Decimal(bnb[minute]))
                rows.append((ts, "BNB/USDT", "buy", Decimal(2), price, Decimal("0.002"), "BNB", f"b{k}"))
                held_bnb += Decimal("1.998")
                k += 1
                continue
            pair = rng.choice(PAIRS)
            if h not in series[pair]:
                continue
            price = round_sig(Decimal(series[pair][h]) * Decimal(1 + rng.uniform(-0.002, 0.002)))
            use_bnb = minute in bnb and held_bnb > Decimal("0.1")
            if held[pair] > 0 and rng.random() < 0.45:
                qty = (held[pair] * Decimal(rng.choice((25, 50, 100))) / 100).quantize(Decimal("1e-8"), "ROUND_DOWN")
                side = "sell"
            else:
                qty = round_sig(Decimal(rng.uniform(20, 500)) / price, 4)
                side = "buy"
            if qty <= 0:
                continue
            value = qty * price
            kind = "BNB" if use_bnb and rng.random() < 0.5 else ("base" if side == "buy" and rng.random() < 0.4
                                                                 else "USDT")
            if kind == "BNB":
                fee = (value / 1000 / Decimal(bnb[minute])).quantize(Decimal("1e-8"))
                fee_asset, held_bnb = "BNB", held_bnb - fee
            elif kind == "base":
                fee, fee_asset = (qty / 1000).quantize(Decimal("1e-8")), pair
            else:
                fee, fee_asset = (value / 1000).quantize(Decimal("1e-8")), "USDT"
            fees[kind] += 1
            held[pair] += qty - (fee if kind == "base" else 0) if side == "buy" else -qty
            rows.append((ts, f"{pair}/USDT", side, qty, price, fee, fee_asset, str(10_000_000 + k)))
            k += 1
    rng.shuffle(rows)  # the file is in no particular order: the ledger must not care
    with out.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(("timestamp", "symbol", "side", "quantity", "price", "fee", "fee_asset", "trade_id"))
        for ts, sym, side, qty, price, fee, fa, tid in rows:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts // 1000)) + f".{ts % 1000:03d}Z"
            w.writerow((stamp, sym, side, format(qty, "f"), format(price, "f"), format(fee, "f"), fa, tid))
    return {"fills": len(rows), "fees": fees, "first": hours[0], "last": hours[-1]}


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def config_copy(tmp: Path) -> Path:
    from strategies import registry

    data = json.loads((ROOT / "config.json").read_text())
    data["strategies"]["enabled"] = [n for n in data["strategies"]["enabled"] if n in registry.available()]
    path = tmp / "config.json"
    path.write_text(json.dumps(data))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fills", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        src = tmp / "fills.csv"
        t0 = time.perf_counter()
        info = generate(args.fills, src)
        print(f"generated {info['fills']:,} fills over 20 pairs + BNB in {time.perf_counter() - t0:.1f} s "
              f"({src.stat().st_size / 1e6:.1f} MB; fees in USDT/base/BNB: {info['fees']})")
        cfg_path = config_copy(tmp)
        cfg = load_config(cfg_path)
        parse_t, import_t, report_t, cli_import_t, cli_report_t = [], [], [], [], []
        cpu = {"parse": [], "import": [], "report": [], "cli_import": [], "cli_report": []}
        disposals = 0
        for i in range(args.repeat):
            t, c = time.perf_counter(), time.process_time()
            parse_file(src)
            parse_t.append(time.perf_counter() - t)
            cpu["parse"].append(time.process_time() - c)

            conn = store.connect_sync(tmp / f"run{i}" / "live.db")
            t, c = time.perf_counter(), time.process_time()
            res = import_file(conn, src)
            import_t.append(time.perf_counter() - t)
            cpu["import"].append(time.process_time() - c)
            assert res.imported == info["fills"], res
            t, c = time.perf_counter(), time.process_time()
            rep = build(load_entries(conn), 2021, settings_from_config(cfg, "fifo"), cfg.tax.currency)
            text = render_json(rep)
            report_t.append(time.perf_counter() - t)
            cpu["report"].append(time.process_time() - c)
            conn.close()
            disposals = len(rep.disposals)

            state = tmp / f"cli{i}"
            base = [sys.executable, "-m", "core", "--config", str(cfg_path), "--state-dir", str(state), "tax"]
            t, c = time.perf_counter(), child_cpu()
            subprocess.run(base + ["import", str(src)], check=True, cwd=ROOT, capture_output=True)
            cli_import_t.append(time.perf_counter() - t)
            cpu["cli_import"].append(child_cpu() - c)
            t, c = time.perf_counter(), child_cpu()
            subprocess.run(base + ["report", "--year", "2021", "--method", "fifo", "--format", "json", "--output",
                                   str(tmp / "report.json")], check=True, cwd=ROOT, capture_output=True)
            cli_report_t.append(time.perf_counter() - t)
            cpu["cli_report"].append(child_cpu() - c)
            assert (tmp / "report.json").read_text() == text  # the CLI reports exactly what we computed

        med = statistics.median
        p, im, rp = med(parse_t), med(import_t), med(report_t)
        ci, cr = med(cli_import_t), med(cli_report_t)
        c = {k: med(v) for k, v in cpu.items()}
        n = info["fills"]
        load = " / ".join(f"{x:.1f}" for x in __import__("os").getloadavg())
        print(f"report 2021 FIFO: {disposals:,} disposals, gain {json.loads(text)['totals']['gain']} "
              f"{cfg.tax.currency}")
        print(f"medians of {args.repeat} runs, {n:,} fills (load average {load}; CPU time is what an idle "
              f"machine would wait):")
        print(f"  {'':38} {'wall s':>7} {'CPU s':>7} {'fills/s (CPU)':>14} {'vs parse':>9}")
        for label, wall, key in (("parse CSV only (reference)", p, "parse"), ("import (parse + insert)", im, "import"),
                                 ("ledger + JSON report", rp, "report")):
            print(f"  {label:38} {wall:7.2f} {c[key]:7.2f} {n / c[key]:>14,.0f} {c[key] / c['parse']:8.2f}x")
        print(f"  {'CLI `tax import FILE`':38} {ci:7.2f} {c['cli_import']:7.2f}")
        print(f"  {'CLI `tax report --format json --output`':38} {cr:7.2f} {c['cli_report']:7.2f}")
        wall_total, cpu_total = ci + cr, c["cli_import"] + c["cli_report"]
        print(f"  {'CLI import + report total':38} {wall_total:7.2f} {cpu_total:7.2f}   target < 10 s: "
              f"{'met' if cpu_total < 10 else 'MISSED'} on CPU time, {'met' if wall_total < 10 else 'missed'} "
              f"on wall time")


if __name__ == "__main__":
    main()
