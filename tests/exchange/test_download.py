"""`pitrader download` against the loopback Binance emulator, through the real ccxt gateway.

The emulator serves the real 1h candles (prices as Binance sends them: 8 decimals) up to its
virtual now; the download must reproduce exactly those candles, across pages, gaps (COCOS's
97-hour halt), restarts and exchange faults.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.config import config_from_dict

from core.secrets import Secrets
from core.exchange.download import Banned, DownloadError, csv_path, download, last_timestamp
from core.backtest.runner import parse_date
from core.exchange.replay import HEADER, load_csv
from core.exchange.setup import live_setup
from tests.conftest import ROOT
from tests.support.emulator import running_emulator

H = 3_600_000
NOW = parse_date("2021-02-01T05:30Z", "now")  # emulator's market time: the 04:00 candle is the last closed
SINCE = parse_date("2021-01-10", "since")
PAIRS = ["BTC/USDT", "ETH/USDT", "COCOS/USDT"]


@pytest.fixture(scope="module")
def emu():
    with running_emulator(start_ms=NOW) as e:
        yield e


@pytest.fixture(autouse=True)
def healthy(emu):
    emu.faults.clear()
    yield
    emu.faults.clear()


def expected(emu, symbol: str, since: int = SINCE) -> np.ndarray:
    """What the exchange has: closed candles from ``since``, values as sent (8 decimals)."""
    s = emu.candles.series(symbol.replace("/", ""), H)
    lo, hi = s.index_at(since), s.closed_count(emu.now_ms)
    out = np.column_stack([s.ts[lo:hi].astype(np.float64), s.ohlcv[lo:hi]])
    out[:, 1:] = [[float(f"{v:.8f}") for v in row] for row in out[:, 1:]]
    return out


def fetch(emu, root: Path, pairs=PAIRS, gateway=None, **kw):
    cfg = config_from_dict({"exchange": {"api_url": emu.url, "timeout_s": 2}})

    async def go():
        gw = gateway(cfg) if gateway else live_setup(cfg, Secrets())[0]
        try:
            return await download(gw, pairs, "1h", SINCE, root, **kw)
        finally:
            await (gw.inner.close() if hasattr(gw, "inner") else gw.close())

    return asyncio.run(go())


def read(root: Path, symbol: str) -> np.ndarray:
    return load_csv(csv_path(root, symbol, "1h"), H)


def test_full_download_equals_the_exchange(emu, tmp_path):
    results = fetch(emu, tmp_path, page=150)  # several pages per pair
    for r in results:
        assert r.error is None and r.had is None
        want = expected(emu, r.symbol)
        assert r.added == len(want) > 400
        assert np.array_equal(read(tmp_path, r.symbol), want)
    cocos = read(tmp_path, "COCOS/USDT")
    assert np.diff(cocos[:, 0]).max() == 97 * H  # the real 97-hour halt is kept, not filled
    assert csv_path(tmp_path, "BTC/USDT", "1h").read_text().startswith(HEADER + "\n")
    assert not list(tmp_path.rglob("*.part"))


def test_rerun_resumes_and_fetches_only_new_candles(emu, tmp_path):
    fetch(emu, tmp_path, pairs=["BTC/USDT"])
    before = csv_path(tmp_path, "BTC/USDT", "1h").read_bytes()
    again = fetch(emu, tmp_path, pairs=["BTC/USDT"])[0]
    assert again.added == 0 and csv_path(tmp_path, "BTC/USDT", "1h").read_bytes() == before  # up to date
    emu.advance(5 * H)  # five more candles close on the exchange
    later = fetch(emu, tmp_path, pairs=["BTC/USDT"])[0]
    assert later.had == int(expected(emu, "BTC/USDT")[-6, 0]) and later.added == 5
    assert np.array_equal(read(tmp_path, "BTC/USDT"), expected(emu, "BTC/USDT"))


class Interrupting:
    """The real gateway, but the connection dies for good after ``pages`` requests."""

    def __init__(self, cfg, pages: int) -> None:
        self.inner, self.left = live_setup(cfg, Secrets())[0], pages

    async def fetch_ohlcv(self, *a, **kw):
        if self.left <= 0:
            from core.exchange.gateway import GatewayError
            raise GatewayError("connection lost (test)")
        self.left -= 1
        return await self.inner.fetch_ohlcv(*a, **kw)


def test_interrupted_then_resumed_equals_a_full_download(emu, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    fetch(emu, full, page=100)
    cut = fetch(emu, part, gateway=lambda cfg: Interrupting(cfg, 3), pairs=["ETH/USDT"], page=100, concurrency=1)[0]
    assert cut.error and "connection lost" in cut.error and cut.added == 300
    assert len(read(part, "ETH/USDT")) == 300  # three whole pages committed, a valid file
    fetch(emu, part, page=100)
    for sym in PAIRS:
        assert csv_path(part, sym, "1h").read_bytes() == csv_path(full, sym, "1h").read_bytes()


def test_killed_mid_download_leaves_valid_files_and_resumes(emu, tmp_path):
    """SIGKILL the CLI in the middle (slow exchange, small pages), then run the same command again."""
    cfg = tmp_path / "config.json"
    doc = json.loads((ROOT / "config.json").read_text())
    doc["exchange"]["api_url"] = emu.url
    cfg.write_text(json.dumps(doc))
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "core", "--config", str(cfg), "download", "--pairs", ",".join(PAIRS),
           "--since", "2021-01-10", "--page", "40", str(out)]
    emu.faults.latency_s = 0.15
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            p.exists() and p.stat().st_size > 8000 for p in (csv_path(out, s, "1h") for s in PAIRS)):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    emu.faults.latency_s = 0.0
    partial = {s: read(out, s) for s in PAIRS if csv_path(out, s, "1h").exists()}
    assert partial and all(len(a) < len(expected(emu, s)) for s, a in partial.items())  # really interrupted
    for s, a in partial.items():  # whatever landed is a clean prefix
        assert np.array_equal(a, expected(emu, s)[:len(a)])
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for s in PAIRS:
        assert np.array_equal(read(out, s), expected(emu, s))
    assert "BTC/USDT" in done.stdout and "candles" in done.stdout


def test_flaky_exchange_is_retried(emu, tmp_path):
    emu.faults.error_5xx_rate = 0.25
    emu.faults.rate_429 = 0.05
    emu.faults.retry_after_s = 1
    waits = []

    async def no_sleep(s):
        waits.append(s)

    results = fetch(emu, tmp_path, page=200, sleep=no_sleep, on_wait=lambda why, s: None)
    for r in results:
        assert r.error is None
        assert np.array_equal(read(tmp_path, r.symbol), expected(emu, r.symbol))
    faults = [r for r in emu.request_log() if r.fault]
    assert faults, "the emulator injected faults"


def test_persistent_fault_is_reported_and_other_pairs_finish(emu, tmp_path):
    emu.faults.error_5xx_rate = 1.0
    emu.faults.symbols = {"ETH/USDT"}

    async def no_sleep(s):
        return None

    res = {r.symbol: r for r in fetch(emu, tmp_path, attempts=2, sleep=no_sleep)}
    assert res["BTC/USDT"].error is None and res["COCOS/USDT"].error is None
    err = res["ETH/USDT"].error
    assert err and "ETH/USDT" in err and "HTTP 5" in err and "run the same command again" in err
    assert not csv_path(tmp_path, "ETH/USDT", "1h").exists()


def test_ban_stops_everything_with_a_clear_message(emu, tmp_path):
    emu.faults.ban_418 = True
    with pytest.raises(Banned, match="HTTP 418.*resumes"):
        fetch(emu, tmp_path)


def test_existing_foreign_file_is_not_overwritten(emu, tmp_path):
    path = csv_path(tmp_path, "BTC/USDT", "1h")
    path.parent.mkdir(parents=True)
    path.write_text("date,price\n2021-01-01,1\n")
    r = fetch(emu, tmp_path, pairs=["BTC/USDT"])[0]
    assert r.error and "header" in r.error and path.read_text() == "date,price\n2021-01-01,1\n"
    with pytest.raises(DownloadError):
        last_timestamp(path)


def test_cli_usage_errors(tmp_path):
    for args, msg in ((["--pairs", "BTCUSDT"], "expected BASE/QUOTE"), (["--pairs", "BTC/USDT", "--timeframe", "2h"],
                      "--timeframe"), (["--pairs", "BTC/USDT", "--since", "2021-02-01", "--until", "2021-01-01"],
                      "--until")):
        if "--since" not in args:
            args = args + ["--since", "2021-01-01"]
        out = subprocess.run([sys.executable, "-m", "core", "download", *args, str(tmp_path)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and msg in out.stderr, (args, out.stderr)
