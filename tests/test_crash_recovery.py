"""Crash test: the live engine against the loopback exchange, SIGKILLed at random moments.

`pitrader run` (live mode, the real CLI in a subprocess) trades against the emulator running in
this process. It is killed with SIGKILL 32 times, at seeded random moments: after a random
delay, or right after one of its orders reached the exchange (the window where the exchange
has acted and the bot has not yet stored the reply). Each time it is restarted on the same
state directory. At the end every trade the exchange made is in the store exactly once, no
client order id reached the exchange twice, and the positions and fills account for the
exchange's balances to the last unit.

With exchange-side protection on (config.json's default ``trading.exchange_stops`` "oco"), each
kill is followed by a random downtime while the market runs on, so stops and targets fill on the
exchange while pitrader is down. After every restart that finishes its start-up (``RestartChecks``):
every trade the exchange made before it is in the store exactly once, no position has sold more
than it held, none is still open after one of its legs filled, and every open position has a
resting exchange stop (rechecked one monitor interval later before it counts as a violation).

Every filled entry is protected right after its fill, judged by the order in which orders reached
the exchange, never by a clock (``RestartChecks.protection_order``): the next order after an entry
is that position's protective order (or its sale, when the price was already through its stop);
across a kill, no other entry comes before it (start-up protects before it trades). The counts
and the slowest entry-to-stop time are printed (run with ``-s``).

The emulator replays 2021 candles on a market clock this test runs 720x faster than real time
(one 1h candle every 5 s); the engine's clock follows it through ``tests.support.fast_clock``
(same CLI, same arguments as `pitrader`), so staleness checks and holding times agree with the
market while request signing stays on the real clock.
"""
from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import signal
import time
from decimal import Decimal
from pathlib import Path

from core.models import BUY
from core.store.state import connect_sync, fill_from_row, FILL_COLUMNS
from tests.support.emulator import running_emulator
from tests.support.fast_clock import MARKET_T0, SPEED, FastService, churn_config

SEED = 20_240_611
KILLS = int(os.environ.get("PT_CRASH_KILLS", "32"))  # at least 30 in CI; fewer only when debugging
D = Decimal


def write_config(d: Path, url: str) -> Path:
    cfg = churn_config(url)  # churn on purpose, so orders keep coming
    cfg["mode"] = "live"
    cfg["universe"]["refresh_s"] = 3600
    cfg["risk"]["max_open_positions"] = 6
    path = d / "config.json"
    path.write_text(json.dumps(cfg))
    return path


LEG = re.compile(r"^pt([0-9a-f]+)-(\d+)-([st])(\d+)$")
ENTRY = re.compile(r"^pt[0-9a-f]+-(\d+)-e\d+$")
POS = re.compile(r"^pt[0-9a-f]+-(\d+)-")
# the engine could not tell what the exchange did: it goes on and looks the orders up later
UNCLEAR = ("no clear answer", "cannot check the protective order yet")


def _pid(client_id: str | None) -> int | None:
    m = POS.match(client_id or "")
    return int(m.group(1)) if m else None


class RestartChecks:
    """Checks made on each restart once its start-up (reconciliation and protection) is done, while
    it runs: every fill the exchange made before the restart is in the store once; no position
    has sold more than it held; no position is still open after one of its exchange legs filled
    before the restart; every open position has a resting exchange stop (or loses it only to an
    exit, within one monitor interval)."""

    def __init__(self, state: Path, emu) -> None:
        self.state, self.emu = state, emu
        self.checked_runs = 0
        self.last_checked: Path | None = None
        self.violations: list[str] = []
        self.protected_at_start = 0  # open positions found with a resting stop after a restart
        self.leg_fills_while_down = 0  # exchange legs that filled while pitrader was down
        self.closed_by_leg = 0
        self.windows: list[list] = []  # [killed at, next start-up done at] in market ms
        self._counted_legs: set[str] = set()

    def down(self, seconds: float) -> None:
        self.windows.append([self.emu.now_ms, None])  # until the next run finished its start-up
        time.sleep(seconds)

    def _read(self):
        conn = sqlite3.connect(f"file:{self.state / 'live.db'}?mode=ro", uri=True, timeout=5)
        try:
            tag = json.loads(conn.execute("SELECT value FROM bot_state WHERE key='order_tag'").fetchone()[0])
            positions = {r[0]: (r[1], D(r[2])) for r in conn.execute("SELECT id, status, amount FROM positions")}
            orders = {r[0]: r[1:] for r in conn.execute("SELECT client_id, position_id, intent, status FROM orders")}
            fills = [fill_from_row(r) for r in conn.execute(f"SELECT {FILL_COLUMNS} FROM fills WHERE source='bot'")]
        finally:
            conn.close()
        return tag, positions, orders, fills

    def _resting_stops(self, tag: str) -> set[int]:
        out = set()
        for o in self.emu.order_list:
            m = LEG.match(o.client_id)
            if m and m.group(1) == tag and m.group(3) == "s" and o.status in ("NEW", "PARTIALLY_FILLED"):
                out.add(int(m.group(2)))
        return out

    def after_start(self, log: Path, launched_at: int) -> None:
        if self.last_checked == log or "protection check done" not in log.read_text():
            return
        self.last_checked = log
        self.checked_runs += 1
        for w in self.windows:
            if w[1] is None:
                w[1] = self.emu.now_ms
        tag, positions, orders, fills = self._read()
        stored = {(f.symbol, f.trade_id) for f in fills}
        for t in self.emu.trades:
            if t.time <= launched_at and (f"{t.symbol[:-4]}/USDT", str(t.id)) not in stored:
                self.violations.append(f"{log.name}: exchange trade {t.id} ({t.client_id}) not in the store")
        sold: dict[int, D] = {}
        held: dict[int, D] = {}
        for f in fills:
            pid = orders[f.order_id][0]
            if f.side == BUY:
                held[pid] = held.get(pid, D(0)) + f.quantity - (f.fee if f.fee_asset == f.symbol.split("/")[0] else 0)
            else:
                sold[pid] = sold.get(pid, D(0)) + f.quantity
        self.violations += [f"{log.name}: position #{p} sold {q}, held {held.get(p, D(0))}"
                            for p, q in sold.items() if q > held.get(p, D(0))]
        for o in self.emu.order_list:
            m = LEG.match(o.client_id)
            if not m or m.group(1) != tag or o.executed_qty <= 0 or o.update_time > launched_at:
                continue
            pid = int(m.group(2))
            if o.client_id not in self._counted_legs:
                self._counted_legs.add(o.client_id)
                self.closed_by_leg += 1
                if any(a <= o.update_time <= (b if b is not None else launched_at) for a, b in self.windows):
                    self.leg_fills_while_down += 1
            if positions.get(pid, ("closed",))[0] == "open":
                self.violations.append(f"{log.name}: position #{pid} still open after its leg {o.client_id} filled")
        in_flight = {p for cid, (p, intent, status) in orders.items() if intent == "entry"
                     and status in ("new", "submitted", "partially_filled")}
        bare = {p for p, (status, amount) in positions.items() if status == "open" and amount > 0} - in_flight \
            - self._resting_stops(tag)
        self.protected_at_start += sum(1 for s, a in positions.values() if s == "open" and a > 0) - len(bare)
        if bare:  # an exit may be cancelling a list right now: one monitor interval (0.5 s) and a request later?
            time.sleep(1.0)
            _, positions, _, _ = self._read()
            still = {p for p in bare if positions[p][0] == "open"} - self._resting_stops(tag)
            self.violations += [f"{log.name}: position #{p} without a resting stop after start" for p in still]

    def protection_delays(self, trades, orders) -> tuple[list[int], int]:
        """Market ms from each entry fill to its first resting stop on the exchange; entries killed
        before being protected (the restart checks cover those) or sold at once are counted apart."""
        entry = re.compile(r"^pt[0-9a-f]+-(\d+)-e\d+$")
        filled: dict[int, int] = {}
        sold: dict[int, int] = {}
        for t in trades:
            m = entry.match(t.client_id)
            if m:
                filled[int(m.group(1))] = min(filled.get(int(m.group(1)), t.time), t.time)
        placed: dict[int, int] = {}
        by_id = {o.client_id: o for o in orders}
        for o in orders:
            m = LEG.match(o.client_id)
            if m and m.group(3) == "s":
                placed[int(m.group(2))] = min(placed.get(int(m.group(2)), o.time), o.time)
        for t in trades:
            o = by_id.get(t.client_id)
            pid = re.match(r"^pt[0-9a-f]+-(\d+)-", t.client_id or "")
            if o is not None and o.side == "SELL" and pid:
                sold[int(pid.group(1))] = min(sold.get(int(pid.group(1)), t.time), t.time)
        delays, exempt = [], 0
        for pid, t_fill in filled.items():
            t_prot = placed.get(pid)
            killed = any(t_fill <= a <= (t_prot if t_prot is not None else 1 << 62) for a, _ in self.windows)
            if killed or (t_prot is None or t_prot > sold.get(pid, 1 << 62)):
                exempt += 1
            else:
                delays.append(t_prot - t_fill)
        return delays, exempt

    def protection_order(self, orders, stops: dict[int, Decimal], closes, text: str) -> tuple[list[str], dict]:
        """Each filled entry's protection, from the order in which orders reached the exchange.

        Its handling is the position's first protective leg, or its first sale. Between the entry
        and it, the engine may send nothing else (the stop goes out right after the fill, not at a
        later poll); when a kill fell in between, nothing but other entries is forbidden
        (start-up may first settle and protect other positions, never trade). Allowed: a skip
        because the price was through the stop (``stops``: position id -> stop) at some moment
        between the fill and the first other order (``closes(symbol, a, b)``: the market's
        closes then), and an answer the engine could not read (it logged so: it looks up later).
        Never handled at all is a violation."""
        bad: list[str] = []
        counts = {"entries": 0, "strict": 0, "after_kill": 0, "through": 0, "unclear": 0}
        lines = text.splitlines()
        first_entry: dict[int, int] = {}
        for i, o in enumerate(orders):
            m = ENTRY.match(o.client_id)
            if m and o.executed_qty > 0:
                first_entry.setdefault(int(m.group(1)), i)
        for pid, i in sorted(first_entry.items()):
            counts["entries"] += 1
            entry = orders[i]
            h = next((j for j in range(i + 1, len(orders)) if _pid(orders[j].client_id) == pid
                      and (LEG.match(orders[j].client_id) or orders[j].side == "SELL")), None)
            if h is None:
                bad.append(f"position #{pid}: entry {entry.client_id} filled, never protected nor sold")
                continue
            killed = any(entry.time <= a <= orders[h].time for a, _ in self.windows)
            counts["after_kill" if killed else "strict"] += 1
            others = [o for o in orders[i + 1:h] if _pid(o.client_id) != pid
                      and (not killed or ENTRY.match(o.client_id))]
            if not others:
                continue
            if min(closes(entry.symbol, entry.time, others[0].time)) <= stops[pid]:
                counts["through"] += 1
                continue
            if any(w in ln and (f"-{pid}-" in ln or f" #{pid}:" in ln) for ln in lines for w in UNCLEAR):
                counts["unclear"] += 1
                continue
            bad.append(f"position #{pid}: after its entry {entry.client_id} filled, "
                       f"{[o.client_id for o in others[:3]]} reached the exchange before its protection "
                       f"{orders[h].client_id}" + (" (a kill in between)" if killed else ""))
        return bad, counts

    def report(self, kinds: dict, runs: int) -> None:
        print(f"\nSIGKILL test: {runs - 1} SIGKILLs ({kinds}; after_order: only those right after an order), "
              f"{runs} runs, {self.checked_runs} restarts "
              f"checked after start-up; exchange legs filled: {self.closed_by_leg} (of them while pitrader was down: "
              f"{self.leg_fills_while_down}); open positions protected right after a restart: "
              f"{self.protected_at_start}; violations: {len(self.violations)}")


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path):
    rng = random.Random(SEED)
    with running_emulator(balances={"USDT": "10000"}, start_ms=MARKET_T0, seed=SEED) as emu:
        config = write_config(tmp_path, emu.url)
        env_file = tmp_path / "pitrader.env"
        env_file.write_text(f"BINANCE_API_KEY={emu.api_key}\nBINANCE_API_SECRET={emu.api_secret}\n")
        state = tmp_path / "state"
        # kills by kind: "start_up" at a random moment from launch (often inside start-up/reconciliation),
        # "timer" at a random moment after start-up, "after_order" right after an order reached the exchange
        kinds = {"start_up": 0, "timer": 0, "after_order": 0}
        checks = RestartChecks(state, emu)
        svc = FastService(emu, tmp_path, config, env_file, state)
        logs, launch = svc.logs, svc.launch

        def wait(proc, seconds: float, until=lambda: False) -> None:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and proc.poll() is None and not until():
                checks.after_start(logs[-1], launched_at)
                time.sleep(0.002)

        with svc:  # leaving it stops the market (no stop fills after the last run) and kills a run left going
            for i in range(KILLS):
                launched_at = emu.now_ms
                proc = launch()
                if i % 4 == 0:
                    wait(proc, rng.uniform(0.3, 4.0))
                    kinds["start_up"] += 1
                else:
                    wait(proc, 30.0, lambda: checks.last_checked == logs[-1])  # start-up done (or a slow machine)
                    if i % 4 == 1:
                        wait(proc, rng.uniform(0.0, 3.0))
                        kinds["timer"] += 1
                    else:  # right after its next order reached the exchange, before it can store the reply
                        seen = len(emu.order_list)
                        wait(proc, 6.0, lambda: len(emu.order_list) > seen)
                        time.sleep(rng.uniform(0.0, 0.01))
                        kinds["after_order"] += len(emu.order_list) > seen
                assert proc.poll() is None, f"run {i} exited by itself: {logs[-1].read_text()[-2000:]}"
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                checks.down(rng.uniform(0.0, 1.5))  # the Pi stays down a while: the market (and its stops) go on
            # a last, undisturbed run reconciles everything, trades a little, and stops cleanly
            launched_at = emu.now_ms
            proc = launch()
            wait(proc, 30.0, lambda: checks.last_checked == logs[-1])  # start-up done (or a slow machine) ...
            wait(proc, 8.0)  # ... then it trades a while
            assert checks.checked_runs and checks.last_checked == logs[-1], "the last run never finished its start"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, logs[-1].read_text()[-3000:]

        text = "\n".join(p.read_text() for p in logs)
        trades, orders, balances = emu.trades, emu.order_list, emu.balances
        emulator_bugs = list(emu.internal_errors)
        posts = sum(1 for r in emu.request_log() if r.method == "POST" and r.path == "/api/v3/order")

        def closes(symbol: str, a: int, b: int) -> list[Decimal]:
            """The prices the exchange showed for ``symbol`` from market time ``a`` to ``b`` (candle closes)."""
            s = emu.candles.price_series(symbol)
            lo, hi = max(s.closed_count(a) - 1, 0), max(s.closed_count(b) - 1, 0)
            return [D(repr(float(c))) for c in s.ohlcv[lo:hi + 1, 3]]

    conn = connect_sync(state / "live.db")
    stops = {}
    for pid, stop, trail, high in conn.execute("SELECT id, stop, trail_pct, highest FROM positions"):
        stop, trail = D(stop), D(trail)  # the stop the engine placed: the trail's, when that is higher
        stops[pid] = max(stop, D(high) * (1 - trail)) if trail > 0 else stop
    conn.close()
    delays, exempt = checks.protection_delays(trades, orders)
    order_bad, counts = checks.protection_order(orders, stops, closes, text)
    checks.report(kinds, len(logs))
    print(f"entry fills protected on the exchange: {len(delays)}, slowest after "
          f"{max(delays, default=0) / SPEED / 1000:.3f} s (wall, for information); not counted: {exempt} (killed in "
          f"between, or sold at once because the price was already through the stop); order of protection: {counts}")
    assert delays and order_bad == [], order_bad
    assert emulator_bugs == []
    assert checks.violations == [], checks.violations
    assert checks.checked_runs >= 8 and checks.leg_fills_while_down >= 1, vars(checks)
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
    # nothing left in doubt; what still rests is an open position's exchange stop, resting on the exchange too
    resting = {o.client_id for o in orders if o.status in ("NEW", "PARTIALLY_FILLED")}
    open_ids = {pid for pid, _, status, _, _ in positions if status == "open"}
    pending = [(cid, pid) for cid, (_, status, pid, _) in store_orders.items() if status in ("new", "submitted")]
    assert [(cid, pid) for cid, pid in pending if not (LEG.match(cid) and cid in resting and pid in open_ids)] == []
