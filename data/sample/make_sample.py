"""Rebuild data/sample from ../shared/data (run from the checkout: python data/sample/make_sample.py).

Takes the real Binance 1h candles of every pair with a complete window (2021-04-20 .. 2021-05-23,
800 hours, including the 19 May crash) and the real order rules of those pairs from Binance's
exchangeInfo (2021-03-24 dump where it has the pair, else the 2023-09-08 dump).
"""
from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2] / "shared" / "data"
START = int(datetime(2021, 4, 20, tzinfo=timezone.utc).timestamp() * 1000)
HOURS = 800
END = START + HOURS * 3_600_000


def _rules(info_file: Path) -> dict[str, dict]:
    data = json.loads(gzip.decompress(info_file.read_bytes()))
    out = {}
    for s in data["symbols"]:
        f = {flt["filterType"]: flt for flt in s["filters"]}
        notional = f.get("MIN_NOTIONAL") or f.get("NOTIONAL") or {}
        out[s["symbol"]] = {
            "base": s["baseAsset"], "quote": s["quoteAsset"],
            "price_tick": f["PRICE_FILTER"]["tickSize"], "amount_step": f["LOT_SIZE"]["stepSize"],
            "min_amount": f["LOT_SIZE"]["minQty"], "max_amount": f["LOT_SIZE"]["maxQty"],
            "min_cost": notional.get("minNotional"),
            "source": info_file.relative_to(SHARED).as_posix() + f" (serverTime {data['serverTime']})",
        }
    return out


def main() -> None:
    rules_2021 = _rules(SHARED / "raw/ohlcv_import/exchange_info.json.gz")
    rules_2023 = _rules(SHARED / "raw/Binance_API/exchangeInfoCompact.json.gz")
    out_dir = HERE / "1h"
    out_dir.mkdir(exist_ok=True)
    markets = {}
    for src in sorted((SHARED / "ohlcv/1h").glob("*.csv")):
        lines = src.read_text().splitlines()
        rows = [ln for ln in lines[1:] if START <= int(ln.split(",", 1)[0]) < END]
        if len(rows) < HOURS - 20:  # pairs listed later or with long outages in the window
            continue
        base, quote = src.stem.split("_")
        rule = rules_2021.get(base + quote) or rules_2023[base + quote]
        markets[f"{base}/{quote}"] = rule
        with gzip.GzipFile(out_dir / (src.name + ".gz"), "wb", mtime=0) as fh:  # reproducible bytes
            fh.write(("\n".join([lines[0], *rows]) + "\n").encode())
    (HERE / "markets.json").write_text(json.dumps(markets, indent=1, sort_keys=True) + "\n")
    print(f"{len(markets)} pairs, {HOURS} hours from {datetime.fromtimestamp(START / 1000, timezone.utc):%Y-%m-%d}")


if __name__ == "__main__":
    main()
