"""Crash test: the live engine against the loopback exchange, SIGKILLed at random moments.

`pitrader run` (live mode, the real CLI in a subprocess) trades against the emulator running in
this process. It is killed with SIGKILL 32 times, at seeded random moments: after a random
delay, or right after one of its orders reached the exchange (the window where the exchange
has acted and the bot has not yet stored the reply). Each time it is restarted on the same
state directory. At the end every trade the exchange made is in the store exactly once, no
client order id reached the exchange twice, and the positions and fills account for the
exchange's balances to the last unit.

The emulator replays 2021 candles on a market clock this test runs 720x faster than real time
(one 1h candle every 5 s); the engine's clock follows it through ``tests.support.fast_clock``
(same CLI, same arguments as `pitrader`), so staleness checks and holding times agree with the
market while request signing stays on the real clock.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

from core.models import BUY
from core.store.state import connect_sync, fill_from_row, FILL_COLUMNS
from tests.support.emulator import running_emulator
from tests.support.fast_clock import market_ms

ROOT = Path(__file__).resolve().parents[1]
SEED = 20_240_611
KILLS = int(os.environ.get("PT_CRASH_KILLS", "32"))  # at least 30 in CI; fewer only when debugging
SPEED = 720.0
MARKET_T0 = 1_615_420_800_000  # 2021-03-11 00:00 UTC
D = Decimal


def write_config(d: Path, url: str) -> Path:
    cfg = json.loads((ROOT / "config.json").read_text())
    cfg["mode"] = "live"
    cfg["exchange"].update({"api_url": url, "timeout_s": 5.0, "weight_budget_pct": 0.9})
    cfg["universe"].update({"max_pairs": 12, "min_quote_volume": 0, "refresh_s": 3600})
    cfg["scanner"].update({"interval_s": 2, "timeframes": ["1h"], "confirm_timeframe": None, "candles": 300,
                           "min_opportunity_score": 0.0})
    # churn on purpose: tight exits and at most one candle per position, so orders keep coming
    cfg["trading"].update({"stop_loss_pct": 0.003, "take_profit_pct": 0.006, "monitor_interval_s": 0.5,
                           "max_hold_hours": 1})
    cfg["risk"].update({"cooldown_minutes": 0, "max_open_positions": 6, "max_daily_loss_pct": 0.5,
                        "max_drawdown_pct": 0.5})
    path = d / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path):
    rng = random.Random(SEED)
    with running_emulator(balances={"USDT": "10000"}, start_ms=MARKET_T0, seed=SEED) as emu:
        wall_t0 = int(time.time() * 1000)
        stop_clock = threading.Event()

        def market_clock():
            while not stop_clock.is_set():
                emu.set_time(max(emu.now_ms, market_ms(time.time() * 1000, MARKET_T0, wall_t0, SPEED)))
                time.sleep(0.02)

        threading.Thread(target=market_clock, daemon=True).start()
        config = write_config(tmp_path, emu.url)
        env_file = tmp_path / "pitrader.env"
        env_file.write_text(f"BINANCE_API_KEY={emu.api_key}\nBINANCE_API_SECRET={emu.api_secret}\n")
        state = tmp_path / "state"
        env = dict(os.environ, PT_MARKET_T0_MS=str(MARKET_T0), PT_WALL_T0_MS=str(wall_t0), PT_SPEED=str(SPEED))
        env.pop("STATE_DIRECTORY", None)
        cmd = [sys.executable, "-m", "tests.support.fast_clock", "--config", str(config), "--env-file",
               str(env_file), "--state-dir", str(state), "run"]
        logs: list[Path] = []

        def launch() -> subprocess.Popen:
            out = tmp_path / f"run-{len(logs):02d}.log"
            logs.append(out)
            return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out.open("w"), stderr=subprocess.STDOUT)

        kinds = {"timer": 0, "after_order": 0}  # kills by kind; "after_order" only when an order did arrive
        try:
            for i in range(KILLS):
                seen = len(emu.order_list)
                proc = launch()
                if i % 2 == 0:  # a random moment of its life: start-up, reconciliation, scan, orders, exits
                    deadline = time.monotonic() + rng.uniform(0.3, 4.0)
                    while time.monotonic() < deadline and proc.poll() is None:
                        time.sleep(0.005)
                    kinds["timer"] += 1
                else:  # right after its next order reached the exchange, before it can store the reply
                    deadline = time.monotonic() + 6.0
                    extra = rng.uniform(0.0, 0.01)
                    while time.monotonic() < deadline and proc.poll() is None and len(emu.order_list) <= seen:
                        time.sleep(0.001)
                    time.sleep(extra)
                    kinds["after_order"] += len(emu.order_list) > seen
                assert proc.poll() is None, f"run {i} exited by itself: {logs[-1].read_text()[-2000:]}"
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
            # a last, undisturbed run reconciles everything, trades a little, and stops cleanly
            proc = launch()
            time.sleep(8.0)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, logs[-1].read_text()[-3000:]
        finally:
            stop_clock.set()
            if proc.poll() is None:
                proc.kill()

        text = "\n".join(p.read_text() for p in logs)
        trades, orders, balances = emu.trades, emu.order_list, emu.balances
        emulator_bugs = list(emu.internal_errors)
        posts = sum(1 for r in emu.request_log() if r.method == "POST" and r.path == "/api/v3/order")

    assert emulator_bugs == []
    assert "Traceback" not in text and " ERROR " not in text, text[-3000:]
    assert len(orders) >= 20 and kinds["after_order"] >= 8, kinds  # it really traded through the crashes

    conn = connect_sync(state / "live.db")
    fills = [fill_from_row(r) for r in conn.execute(f"SELECT {FILL_COLUMNS} FROM fills WHERE source='bot'")]
    store_orders = {r[0]: r for r in conn.execute("SELECT client_id, status, position_id, intent FROM orders")}
    positions = conn.execute("SELECT id, symbol, status, amount, exit_reason FROM positions").fetchall()

    # 1. every fill the exchange made is in the store exactly once
    exchange_fills = sorted((f"{t.symbol[:-4]}/USDT", str(t.id)) for t in trades)
    stored = sorted((f.symbol, f.trade_id) for f in fills)
    assert stored == exchange_fills

    # 2. no order was sent twice: each client id reached the exchange once, and each is ours
    ids = [o.client_id for o in orders]
    assert len(ids) == len(set(ids))
    assert set(ids) <= set(store_orders)
    assert posts <= len(store_orders)
    assert all(f.order_id in store_orders for f in fills)  # every fill tied to one of our orders

    # 3. positions and fills account for the exchange's balances exactly
    usdt, base = D("10000"), {}
    for f in fills:
        a = f.symbol.split("/")[0]
        if f.side == BUY:
            usdt -= f.quantity * f.price
            base[a] = base.get(a, D(0)) + f.quantity - (f.fee if f.fee_asset == a else 0)
        else:
            usdt += f.quantity * f.price - (f.fee if f.fee_asset == "USDT" else 0)
            base[a] = base.get(a, D(0)) - f.quantity
    assert balances.get("USDT", D(0)) == usdt.quantize(D("0.00000001"))
    for a, q in base.items():
        assert balances.get(a, D(0)) == q, a
    assert set(balances) <= set(base) | {"USDT"}
    sold: dict[int, Decimal] = {}
    for f in fills:
        if f.side != BUY:
            pid = store_orders[f.order_id][2]
            sold[pid] = sold.get(pid, D(0)) + f.quantity
    held: dict[str, Decimal] = {}
    for pid, symbol, status, amount, reason in positions:
        assert status in ("open", "closed"), (pid, status)  # nothing left half-closed
        assert reason != "balance_missing"
        left = D(amount) - sold.get(pid, D(0))
        assert left >= 0
        held[symbol.split("/")[0]] = held.get(symbol.split("/")[0], D(0)) + left
    for a, q in base.items():
        assert held.get(a, D(0)) == q, a  # open amounts + unsellable dust == the account, per asset
    assert not [cid for cid, (_, status, _, _) in store_orders.items() if status in ("new", "submitted")]
