"""Write a mirrored copy of recorded OHLCV: every price p becomes p0^2 / p (p0: the pair's first
close), so each rally becomes a fall of the same size and each crash a rally; volume is scaled so
that every candle trades the same quote amount (the same pairs pass the volume filters).

Why: ``../shared`` holds one market (the 2021 rally, then the May crash). Mirroring it gives a
*synthetic* stress test for a long-only book in a falling market -- Dec 2020 to Apr 2021 become a
four-month fall (BTC -67 %) -- with the same volatility and gaps. It is not a real market (a mirrored
crash is a squeeze, and skew flips sign): use it to check that the defaults stand aside and keep
their caps, never to choose them. Usage:

    .venv/bin/python research/mirror_market.py ../shared/data/ohlcv/1h /tmp/mirrored/1h
    pitrader backtest --data /tmp/mirrored/1h --baseline-seeds 20 --verify 0 --json
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path


def mirror_file(src: Path, dst: Path) -> None:
    with src.open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    k = float(body[0][4]) ** 2
    with dst.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(header)
        for ts, o, h, lo, c, v in body:
            o, h, lo, c, v = map(float, (o, h, lo, c, v))
            # the new high is the mirror of the old low; quote volume (volume x close) is kept
            out.writerow([ts, repr(k / o), repr(k / lo), repr(k / h), repr(k / c), repr(v * c * c / k)])


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: mirror_market.py SOURCE_DIR TARGET_DIR (folders of BASE_QUOTE.csv)", file=sys.stderr)
        return 2
    src, dst = Path(argv[0]), Path(argv[1])
    files = sorted(src.glob("*.csv"))
    if not files:
        print(f"{src}: no BASE_QUOTE.csv files", file=sys.stderr)
        return 66
    dst.mkdir(parents=True, exist_ok=True)
    for path in files:
        mirror_file(path, dst / path.name)
    print(f"mirrored {len(files)} pairs into {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
