"""``python -m tests.support.emulator``: serve the loopback Binance until Ctrl-C.

    python -m tests.support.emulator --port 8765 --data ../shared/data/ohlcv \
        --start 2021-03-01T00:00:00Z --latency-ms 80 --balance USDT=10000 --speed 3600

Prints the base URL (first line, for scripts), then what to put in config.json.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from tests.support.emulator import DEFAULT_EXCHANGE_INFO, DEFAULT_OHLCV_DIR, DEFAULT_START_MS, Emulator


def _iso_ms(text: str) -> int:
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--start: expected an ISO 8601 time such as 2021-03-01T00:00:00Z, "
                                         f"got {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def _balance(text: str) -> tuple[str, str]:
    asset, sep, amount = text.partition("=")
    if not sep or not asset or not amount:
        raise argparse.ArgumentTypeError(f"--balance: expected ASSET=AMOUNT such as USDT=10000, got {text!r}")
    return asset.upper(), amount


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.support.emulator", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port (default 8765)")
    p.add_argument("--data", type=Path, default=DEFAULT_OHLCV_DIR,
                   help="OHLCV directory: ohlcv/ root with 1h/, 5m/ ... or a flat directory of CSVs")
    p.add_argument("--exchange-info", type=Path, default=DEFAULT_EXCHANGE_INFO, help="exchangeInfo .json or .json.gz")
    p.add_argument("--start", type=_iso_ms, default=DEFAULT_START_MS, help="market time to start at (UTC)")
    p.add_argument("--realtime", action="store_true",
                   help="serve the candle at --start as if it were now, then follow the wall clock "
                        "(for `pitrader scan --once` / `run` against it)")
    p.add_argument("--speed", type=float, default=0.0,
                   help="market seconds per wall second (0: frozen; 3600: one hourly candle per second)")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--balance", type=_balance, action="append", default=None, help="ASSET=AMOUNT, repeatable")
    p.add_argument("--weight-limit", type=int, default=6000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--api-key", default="emu-key-0001")
    p.add_argument("--api-secret", default="emu-secret-0001")
    p.add_argument("--state-file", type=Path, default=None)
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    balances = dict(args.balance) if args.balance else None
    try:
        emu = Emulator(args.data, args.exchange_info, args.start, api_key=args.api_key, api_secret=args.api_secret,
                       balances=balances, weight_limit=args.weight_limit, seed=args.seed, state_file=args.state_file,
                       realtime=args.realtime)
    except ValueError as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    emu.faults.latency_s = args.latency_ms / 1000.0
    url = await emu.start(args.host, args.port)
    print(url, flush=True)  # market time (with --speed) runs from here
    print(f"  {len(emu.symbols)} symbols, market time "
          f"{datetime.fromtimestamp(emu.now_ms / 1000, timezone.utc):%Y-%m-%d %H:%M}Z, "
          f"API key {args.api_key}; config.json: \"exchange\": {{\"api_url\": \"{url}\"}}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Market time follows the wall clock from the moment the URL was printed (not tick counts,
    # which drift under load), so a client can compute it as start + elapsed * speed.
    wall0, market0 = time.monotonic(), emu.now_ms
    tick = 0.25
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=tick)
            except asyncio.TimeoutError:
                if args.speed > 0:
                    emu.set_time(max(emu.now_ms, market0 + int((time.monotonic() - wall0) * args.speed * 1000)))
    finally:
        await emu.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
