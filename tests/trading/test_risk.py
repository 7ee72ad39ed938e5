"""Risk gate: sizing, every check, persisted halts, and a property no input sequence can break."""
from __future__ import annotations

import asyncio
import logging
import tempfile
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.clock import VirtualClock
from core.models import OrderBook, Position
from core.trading.portfolio import build
from core.trading.risk import DAY_MS, RESUME_KEY, Approval, Rejection, RiskGate
from core.trading.rules import ValidOrder, conform_order
from core.store.state import Store
from tests.support.trading import btc_depth, make_cfg, opp, sample_markets

T0 = 1_625_097_600_000  # 2021-07-01 00:00 UTC
BTC = "BTC/USDT"
D = Decimal


def run_gate(tmp_path: Path, cfg, body, now: int = T0):
    async def main():
        async with Store.open(tmp_path / "risk.db") as store:
            clock = VirtualClock(now)
            gate = RiskGate(cfg, store, clock)
            await gate.load()
            return await body(gate, store, clock)

    return asyncio.run(main())


def wallet(cash="1000", positions=(), prices=None):
    return build(D(cash), {}, list(positions), {k: D(str(v)) for k, v in (prices or {}).items()})


def held(symbol, amount, price):
    return Position(symbol=symbol, strategy="t", amount=D(str(amount)), entry_price=D(str(price)),
                    stop=D(str(price)) * D("0.9"), target=D(str(price)) * D("1.2"), opened_ms=T0, id=1)


def test_size_from_risk_then_capped_by_position_size(tmp_path):
    market = sample_markets()[BTC]

    async def body(gate, store, clock):
        a = await gate.evaluate(opp(price=13896.5, stop=13896.5 * 0.98), market, None, wallet("1000"))
        return a

    # risk binds: 1% of 1000 = 10 USDT lost at a stop 2% below -> ~500 USDT position
    a = run_gate(tmp_path, make_cfg(trading={"position_size_pct": 0.9}, risk={"max_asset_exposure_pct": 0.9}), body)
    assert isinstance(a, Approval), a
    assert "bound by risk" in a.reason
    loss_at_stop = a.amount * (a.price - a.stop)
    assert D("9.99") < loss_at_stop <= D("10")
    assert a.stop == D("13618.57")  # 2 % below, rounded up to the 0.01 tick (never wider)
    assert a.amount == a.amount.quantize(D("0.000001"))  # the real BTCUSDT lot step
    # default cap: 10 % of equity
    a = run_gate(tmp_path / "b", make_cfg(), body)
    assert isinstance(a, Approval) and "bound by position_size" in a.reason
    assert a.amount * a.price <= D("100") and a.amount * a.price > D("99.98")


def test_stop_never_wider_than_config_and_default_target(tmp_path):
    market = sample_markets()[BTC]

    async def body(gate, store, clock):
        return await gate.evaluate(opp(price=20000.0, stop=15000.0, target=19000.0), market, None, wallet())

    a = run_gate(tmp_path, make_cfg(trading={"stop_loss_pct": 0.03, "take_profit_pct": 0.06}), body)
    assert a.stop == D("19400.00") and a.target == D("21200.00")


@pytest.mark.parametrize("check,setup", [
    ("side", lambda: dict(o=replace(opp(), side="sell"))),
    ("min_score", lambda: dict(o=opp(score=40.0))),
    ("one_per_pair", lambda: dict(w=wallet(positions=[held(BTC, "0.001", 13000)]))),
    ("max_positions", lambda: dict(w=wallet(positions=[held("ETH/USDT", 1, 100), held("ADA/USDT", 10, 1)]),
                                   cfg=make_cfg(risk={"max_open_positions": 2}))),
    ("exchange_rules", lambda: dict(w=wallet("50"))),  # 10 % of 50 USDT is under the 10 USDT minimum notional
    ("cash", lambda: dict(w=build(D("0"), {}, [held("ETH/USDT", 1, 1000)], {}))),
    ("exposure", lambda: dict(w=wallet("750", positions=[held("BTC/EUR", "0.02", 12500)]))),
    ("spread", lambda: dict(book=btc_depth(), cfg=make_cfg(risk={"max_spread_pct": 1e-7}))),
    ("slippage", lambda: dict(book=btc_depth(), w=wallet("1000000"),
                              cfg=make_cfg(trading={"position_size_pct": 0.42},
                                           risk={"risk_per_trade_pct": 0.2, "max_slippage_pct": 0.0001,
                                                 "min_depth_multiple": 1, "max_asset_exposure_pct": 0.5}))),
    ("depth", lambda: dict(book=btc_depth(), w=wallet("1000000"),  # 19.5 BTC wanted, 40 in the book, 3x needed
                           cfg=make_cfg(trading={"position_size_pct": 0.27},
                                        risk={"risk_per_trade_pct": 0.2, "max_asset_exposure_pct": 0.5}))),
    ("depth", lambda: dict(book=btc_depth(), w=wallet("1000000"),  # more than the whole visible book
                           cfg=make_cfg(trading={"position_size_pct": 0.9},
                                        risk={"risk_per_trade_pct": 0.2, "max_asset_exposure_pct": 0.9}))),
    ("book", lambda: dict(book=OrderBook(BTC, T0, (), ((13896.14, 1.0),)))),
])
def test_every_rejection_is_logged_and_counted(tmp_path, caplog, check, setup):
    s = setup()
    cfg = s.get("cfg", make_cfg())

    async def body(gate, store, clock):
        r = await gate.evaluate(s.get("o", opp(price=13896.14)), sample_markets()[BTC], s.get("book"),
                                s.get("w", wallet()))
        return r, gate.rejections

    with caplog.at_level(logging.INFO, logger="core.trading.risk"):
        r, counts = run_gate(tmp_path, cfg, body)
    assert isinstance(r, Rejection) and r.check == check, r
    assert counts[check] == 1
    line = [rec for rec in caplog.records if rec.name == "core.trading.risk" and rec.levelno == logging.INFO
            and ("rejected" in rec.getMessage() or "refused" in rec.getMessage())]
    assert line and BTC in line[0].getMessage() and check in line[0].getMessage() and r.reason in line[0].getMessage()


def test_book_checks_pass_on_a_deep_real_book(tmp_path):
    async def body(gate, store, clock):
        return await gate.evaluate(opp(price=13890.0), sample_markets()[BTC], btc_depth(), wallet())

    a = run_gate(tmp_path, make_cfg(), body)
    assert isinstance(a, Approval)
    assert a.price == D("13896.14")  # a market buy is sized at the best ask, not the signal's price


def test_cooldown_after_exit_survives_restart(tmp_path):
    cfg = make_cfg(risk={"cooldown_minutes": 30})
    m = sample_markets()[BTC]

    async def first(gate, store, clock):
        gate.on_exit(BTC, T0)
        r = await gate.evaluate(opp(), m, None, wallet())
        return r

    assert run_gate(tmp_path, cfg, first).check == "cooldown"

    async def later(gate, store, clock):
        r1 = await gate.evaluate(opp(), m, None, wallet())
        clock.advance_to(T0 + 30 * 60_000)
        r2 = await gate.evaluate(opp(), m, None, wallet())
        return r1, r2

    r1, r2 = run_gate(tmp_path, cfg, later, now=T0 + 29 * 60_000)  # a restart 29 minutes later
    assert isinstance(r1, Rejection) and r1.check == "cooldown"
    assert isinstance(r2, Approval)


def test_daily_loss_halts_until_next_utc_day_and_survives_restart(tmp_path):
    cfg = make_cfg(risk={"max_daily_loss_pct": 0.03})
    m = sample_markets()[BTC]

    async def day1(gate, store, clock):
        assert await gate.on_equity(D("1000"), T0 + 3_600_000) == []
        assert await gate.on_equity(D("975"), T0 + 7_200_000) == []  # 2.5 %: still fine
        new = await gate.on_equity(D("970"), T0 + 10_800_000)  # 3 %: halt
        return new, await gate.evaluate(opp(), m, None, wallet("970")), gate.emergency

    new, r, emergency = run_gate(tmp_path, cfg, day1)
    assert len(new) == 1 and new[0].startswith("daily_loss")
    assert r.check == "halt" and not emergency

    async def restart(gate, store, clock):
        r1 = await gate.evaluate(opp(), m, None, wallet("970"))
        await gate.on_equity(D("970"), T0 + DAY_MS)  # next UTC day: lifted, new day start
        r2 = await gate.evaluate(opp(), m, None, wallet("970"))
        return r1, r2, gate.day_start_equity

    r1, r2, start = run_gate(tmp_path, cfg, restart, now=T0 + 20 * 3_600_000)
    assert r1.check == "halt" and isinstance(r2, Approval) and start == D("970")


def test_drawdown_halt_is_an_emergency_until_resumed_or_reconfigured(tmp_path):
    cfg = make_cfg(risk={"max_drawdown_pct": 0.15, "max_daily_loss_pct": 0.15})

    async def crash(gate, store, clock):
        await gate.on_equity(D("1000"), T0)
        await gate.on_equity(D("1200"), T0 + DAY_MS)  # new peak, new day
        new = await gate.on_equity(D("1019"), T0 + DAY_MS + 1)  # 15.08 % below the peak
        return new, gate.emergency

    new, emergency = run_gate(tmp_path, cfg, crash)
    assert any(h.startswith("drawdown") for h in new) and emergency

    async def restart_then_resume(gate, store, clock):
        assert gate.emergency  # persisted
        # what `pitrader status --resume` writes while the service runs:
        await store.set_state(RESUME_KEY, {"requested_ms": T0})
        await gate.on_equity(D("1019"), T0 + DAY_MS + 2)
        after = gate.emergency, gate.peak_equity, await store.get_state(RESUME_KEY)
        await gate.on_equity(D("1019"), T0 + DAY_MS + 3)  # counted from the resume point now
        return after, gate.emergency

    (emergency_after, peak, request), still = run_gate(tmp_path, cfg, restart_then_resume, now=T0 + DAY_MS + 2)
    assert emergency_after is False and peak == D("1019") and request is None and still is False


def test_drawdown_halt_cools_off_then_trades_at_reduced_size_until_the_old_peak(tmp_path):
    """Issue 17: a drawdown halt closes everything; after risk.drawdown_cooloff_hours it resumes by
    itself (a backtest is not over after nine days) with risk.drawdown_resume_size x the risk per
    trade, and full size comes back only once the equity regains the peak before the halt."""
    cfg = make_cfg(risk={"max_drawdown_pct": 0.15, "max_daily_loss_pct": 0.15, "drawdown_cooloff_hours": 72,
                         "drawdown_resume_size": 0.5, "risk_per_trade_pct": 0.01},
                   trading={"position_size_pct": 1.0, "stop_loss_pct": 0.05})
    m = sample_markets()["BTC/USDT"]
    o = opp(price=33000.0, stop=33000.0 * 0.95, target=33000.0 * 1.1)
    H = 3_600_000

    async def body(gate, store, clock):
        await gate.on_equity(D("1000"), T0)
        await gate.on_equity(D("840"), T0 + H)  # 16 % below the peak
        halted = gate.emergency
        clock.advance_to(T0 + 72 * H)
        await gate.on_equity(D("840"), T0 + 72 * H)  # 71 h after the halt: still halted
        still = gate.emergency
        await gate.on_equity(D("840"), T0 + 74 * H)  # cooling-off over
        reduced = await gate.evaluate(o, m, None, wallet("840"))
        await gate.on_equity(D("1000"), T0 + 100 * H)  # back at the old peak
        full = await gate.evaluate(o, m, None, wallet("1000"))
        return halted, still, gate.emergency, reduced, full, gate.snapshot()["reduced_until"]

    halted, still, after, reduced, full, reduced_until = run_gate(tmp_path, cfg, body)
    assert halted and still and not after
    # risk 1 % at a 5 % stop is 20 % of equity; halved after the halt
    assert reduced.amount * reduced.price == pytest.approx(D("840") * D("0.1"), rel=D("0.01"))
    assert full.amount * full.price == pytest.approx(D("1000") * D("0.2"), rel=D("0.01"))
    assert reduced_until is None


def test_a_second_drawdown_halt_before_the_old_peak_waits_for_its_owner(tmp_path):
    """After the first halt's cooling-off the book trades at half size with half the drawdown budget
    (7.5 % from the resume); a second halt there does not cool off by itself, so two halts cost at
    most 1 - 0.85 x 0.925 = 21.4 % before a person decides. A manual resume still works, and full
    size needs the first halt's peak back."""
    cfg = make_cfg(risk={"max_drawdown_pct": 0.15, "max_daily_loss_pct": 0.15, "drawdown_cooloff_hours": 72,
                         "drawdown_resume_size": 0.5})
    H = 3_600_000

    async def body(gate, store, clock):
        await gate.on_equity(D("1000"), T0)
        await gate.on_equity(D("850"), T0 + H)  # first halt at 15 %
        await gate.on_equity(D("850"), T0 + 74 * H)  # cooled off: counting from 850, half budget
        budget = gate.loss_budget(wallet("850"))
        quiet = await gate.on_equity(D("790"), T0 + 75 * H)  # 7.1 % below 850: still trading
        second = await gate.on_equity(D("786"), T0 + 76 * H)  # 7.5 %: the second halt
        await gate.on_equity(D("786"), T0 + 1000 * H)  # long after 72 h: still halted
        waited = gate.emergency
        await store.set_state(RESUME_KEY, {"requested_ms": T0})
        await gate.on_equity(D("786"), T0 + 1001 * H)
        return budget, quiet, second, waited, gate.emergency, gate.snapshot()["reduced_until"]

    budget, quiet, second, waited, after, reduced_until = run_gate(tmp_path, cfg, body)
    assert budget == D("850") * D("0.075")
    assert quiet == [] and any(h.startswith("drawdown") and "does not cool off by itself" in h for h in second)
    assert waited and not after
    assert reduced_until == "1000"


def test_drawdown_halt_lifted_by_a_config_change(tmp_path):
    cfg = make_cfg(risk={"max_drawdown_pct": 0.1, "max_daily_loss_pct": 0.1})

    async def body(gate, store, clock):
        await gate.on_equity(D("1000"), T0)
        await gate.on_equity(D("890"), T0 + 1)
        assert gate.emergency
        gate.update_config(make_cfg(risk={"max_drawdown_pct": 0.2, "max_daily_loss_pct": 0.1}))
        return gate.emergency, [h for h in gate.halts if h.startswith("daily_loss")]

    emergency, daily = run_gate(tmp_path, cfg, body)
    assert emergency is False and daily  # only the drawdown halt is lifted


# --- property: no sequence of opportunities and prices can push the gate past a limit -------------

SYMS = ["BTC/USDT", "ETH/USDT", "ADA/USDT", "DOGE/USDT", "LINK/USDT"]
START_PX = {"BTC/USDT": 33000.0, "ETH/USDT": 2100.0, "ADA/USDT": 1.4, "DOGE/USDT": 0.25, "LINK/USDT": 19.0}

action = st.one_of(
    st.tuples(st.just("opp"), st.integers(0, 4), st.floats(40, 100), st.floats(0.0, 0.2), st.floats(-0.1, 0.3),
              st.booleans()),
    st.tuples(st.just("move"), st.integers(0, 4), st.floats(0.5, 1.6)),
    st.tuples(st.just("exit"), st.integers(0, 10)),
    st.tuples(st.just("tick"), st.integers(1, 3 * 24 * 60)),
)

limits = st.fixed_dictionaries({
    "max_open_positions": st.integers(1, 4),
    "risk_per_trade_pct": st.floats(0.002, 0.2),
    "position_size_pct": st.floats(0.02, 0.9),
    "exposure_extra": st.floats(0.0, 0.4),
    "max_slippage_pct": st.floats(0.0005, 0.02),
})


def scaled_book(symbol: str, price: float) -> OrderBook:
    """The real BTC book moved to ``price`` with the same quote depth."""
    b = btc_depth()
    f = price / b.asks[0][0]
    return OrderBook(symbol, T0, tuple((p * f, a / f) for p, a in b.bids), tuple((p * f, a / f) for p, a in b.asks))


def open_stop_loss(cfg, w) -> Decimal:
    """What stopping out every open position costs from the marked prices, exit fee and paper
    slippage included (recomputed here, independently of ``core.trading.sizing``)."""
    fee, slip = D(str(cfg.paper.fee_pct)), D(str(cfg.paper.slippage_pct))
    return sum((max(D(0), p.amount * (w.prices[p.symbol] - p.stop * (1 - fee - slip))) for p in w.positions), D(0))


def must_approve(cfg, market, w, px: Decimal, score: float, stop_f: float, cooling: bool, halted: bool,
                 budget: Decimal | None = None) -> bool:
    """An independent sufficient condition for an approval without a book: every policy check passes, and
    lower bounds of every size cap leave an order over the exchange minimums with a stop a tick below."""
    r, t = cfg.risk, cfg.trading
    fee, slip = D(str(cfg.paper.fee_pct)), D(str(r.max_slippage_pct))
    if (halted or cooling or score < cfg.scanner.min_opportunity_score * 100 or w.has_position(market.symbol)
            or len(w.positions) >= r.max_open_positions or w.equity <= 0):
        return False
    tick, step = market.price_tick, market.amount_step
    floor = px * (1 - D(str(t.stop_loss_pct)))
    stop = max(px * (1 - D(str(stop_f))), floor) if stop_f > 0 else floor
    if px - stop <= tick or px * D(str(t.take_profit_pct)) <= tick:
        return False
    low = min(w.equity * D(str(r.risk_per_trade_pct)),  # the risk cap is at least this (stop below the price)
              w.equity * D(str(t.position_size_pct)),
              w.equity * D(str(r.max_asset_exposure_pct)) - w.exposure(market.base),
              w.cash / ((1 + fee) * (1 + slip)))
    if budget is not None:  # the loss budget: a stop-out costs at most the stop distance, 2 fees, 2 slippages
        paper_slip = D(str(cfg.paper.slippage_pct))
        low = min(low, (budget - open_stop_loss(cfg, w)) / ((px - stop) / px + 2 * fee + 2 * paper_slip))
    amount = low / px - step  # the lot rounding takes less than a step
    return amount >= (market.min_amount or 0) and amount * (px - tick) >= (market.min_cost or 0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(lim={"max_open_positions": 2, "risk_per_trade_pct": 0.01, "position_size_pct": 0.1, "exposure_extra": 0.0,
              "max_slippage_pct": 0.005},
         actions=[("opp", 0, 80.0, 0.02, 0.05, False)] * 2 + [("opp", 1, 80.0, 0.02, 0.05, False)] * 2
         + [("exit", 0), ("opp", 0, 80.0, 0.02, 0.05, False), ("tick", 61), ("opp", 0, 80.0, 0.02, 0.05, False)],
         start_cash="1000")
@given(lim=limits, actions=st.lists(action, min_size=5, max_size=40),
       start_cash=st.sampled_from(["300", "1000", "25000"]))
def test_no_sequence_exceeds_any_limit(lim, actions, start_cash):
    """No sequence pushes the gate past a limit; every refusal by a policy check is true of the state;
    and whenever an approval is certain (``must_approve``) it comes: a gate refusing everything fails."""
    size = lim["position_size_pct"]
    cfg = make_cfg(trading={"position_size_pct": size},
                   risk={"max_open_positions": lim["max_open_positions"],
                         "risk_per_trade_pct": lim["risk_per_trade_pct"],
                         "max_asset_exposure_pct": min(1.0, size + lim["exposure_extra"]),
                         "max_slippage_pct": lim["max_slippage_pct"], "cooldown_minutes": 60,
                         "max_daily_loss_pct": 0.05, "max_drawdown_pct": 0.2})
    markets = sample_markets()
    fee = D(str(cfg.paper.fee_pct))
    slip = D(str(cfg.risk.max_slippage_pct))

    async def main(path):
        async with Store.open(path) as store:
            clock = VirtualClock(T0)
            gate = RiskGate(cfg, store, clock)
            await gate.load()
            cash, positions, prices = D(start_cash), [], {s: D(str(p)) for s, p in START_PX.items()}
            cool_until: dict[str, int] = {}
            for a in actions:
                w = build(cash, {}, positions, prices)
                if a[0] == "move":
                    prices[SYMS[a[1]]] = (prices[SYMS[a[1]]] * D(str(a[2]))).quantize(D("0.00000001"))
                elif a[0] == "tick":
                    clock.advance_to(clock.now_ms() + a[1] * 60_000)
                    await gate.on_equity(w.equity, clock.now_ms())
                elif a[0] == "exit" and positions:
                    p = positions.pop(a[1] % len(positions))
                    cash += p.amount * prices[p.symbol] * (1 - fee)
                    gate.on_exit(p.symbol, clock.now_ms())
                    cool_until[p.symbol] = clock.now_ms() + 60 * 60_000
                elif a[0] == "opp":
                    _, i, score, stop_f, tgt_f, with_book = a
                    sym, px = SYMS[i], float(prices[SYMS[i]])
                    o = opp(sym, price=px, score=score, stop=px * (1 - stop_f), target=px * (1 + tgt_f))
                    book = scaled_book(sym, px) if with_book else None
                    halted = bool(gate.halts)
                    cooling = cool_until.get(sym, 0) > clock.now_ms()
                    budget = gate.loss_budget(w)
                    r = await gate.evaluate(o, markets[sym], book, w)
                    if isinstance(r, Rejection):
                        assert book is not None or not must_approve(cfg, markets[sym], w, D(str(px)), score, stop_f,
                                                                    cooling, halted, budget), r
                        assert r.check != "halt" or halted
                        assert r.check != "min_score" or score < 50
                        assert r.check != "one_per_pair" or any(p.symbol == sym for p in positions)
                        assert r.check != "max_positions" or len(positions) >= cfg.risk.max_open_positions
                        assert r.check != "cooldown" or cooling
                        continue
                    cost = r.amount * r.price
                    assert not halted and not cooling
                    assert score >= 50
                    assert len(w.positions) < cfg.risk.max_open_positions
                    assert not any(p.symbol == sym for p in positions)
                    assert cost <= w.equity * D(str(size))
                    assert w.exposure(markets[sym].base) + cost <= w.equity * D(str(cfg.risk.max_asset_exposure_pct))
                    assert cost * (1 + fee) * (1 + slip) <= w.cash
                    assert isinstance(conform_order(markets[sym], "buy", r.amount, r.price), ValidOrder)
                    assert r.stop >= r.price * (1 - D(str(cfg.trading.stop_loss_pct))) and r.stop < r.price < r.target
                    if budget is not None:  # the caps: every stop-out together stays within the budget
                        ps = D(str(cfg.paper.slippage_pct))
                        new_loss = cost * (1 + ps) * (1 + fee) - r.amount * r.stop * (1 - fee - ps)
                        assert open_stop_loss(cfg, w) + new_loss <= budget * (1 + D("1e-9")), (new_loss, budget)
                    paid = cost * (1 + slip)  # the worst fill the gate allowed for
                    cash -= paid * (1 + fee)
                    assert cash >= 0
                    positions.append(Position(symbol=sym, strategy="t", amount=r.amount, entry_price=paid / r.amount,
                                              stop=r.stop, target=r.target, opened_ms=clock.now_ms(),
                                              id=len(positions)))
                assert len(positions) <= cfg.risk.max_open_positions

    with tempfile.TemporaryDirectory() as d:
        asyncio.run(main(Path(d) / "p.db"))


# --- caps, not triggers: random price paths through the gate ----------------------------------------
WORST_OVERSHOOT: list[Decimal] = []  # the largest day's loss beyond the cap seen, as a fraction of the day's start


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(st.lists(st.tuples(st.floats(0.9, 1.06), st.floats(0.9, 1.0), st.floats(1.0, 1.08)),
                                         min_size=4, max_size=4),
                                st.integers(1, 40)), min_size=5, max_size=40),
       stop_f=st.floats(0.005, 0.05), risk=st.floats(0.005, 0.05))
def test_a_day_of_stop_outs_stays_within_the_daily_cap_but_for_gaps(steps, stop_f, risk):
    """Issue 17: the daily loss limit is a cap. Within a UTC day that starts flat, entries sized by the
    gate and stopped out (fee, paper slippage and half the paper spread: a backtest's fills) never take
    the day's loss beyond ``risk.max_daily_loss_pct``; only a candle opening below a stop (a gap) may, and by no more than
    what the gaps cost. Each step moves each pair: open = close x g, low = open x l, close = low x c."""
    cfg = make_cfg(trading={"position_size_pct": 0.5, "stop_loss_pct": 0.05},
                   risk={"max_open_positions": 4, "risk_per_trade_pct": risk, "max_daily_loss_pct": 0.03,
                         "max_drawdown_pct": 0.2, "cooldown_minutes": 0, "max_asset_exposure_pct": 1.0})
    fee, slip = D(str(cfg.paper.fee_pct)), D(str(cfg.paper.slippage_pct))
    half = D(str(cfg.paper.spread_pct)) / 2
    assert half > 0  # the default spread: the fills below pay it, so sizing must count it
    markets, syms = sample_markets(), SYMS[:4]

    async def main(path):
        async with Store.open(path) as store:
            clock = VirtualClock(T0)  # a UTC midnight: the day starts flat
            gate = RiskGate(cfg, store, clock)
            await gate.load()
            cash, positions = D(10000), {}
            prices = {s: D(str(START_PX[s])) for s in syms}
            gaps, worst = D(0), D(-1)
            await gate.on_equity(cash, clock.now_ms())
            start = gate.day_start_equity
            for moves, minutes in steps:
                clock.advance_to(min(clock.now_ms() + minutes * 60_000, T0 + DAY_MS - 1))
                for s, (g, lo, c) in zip(syms, moves):
                    open_ = (prices[s] * D(str(g))).quantize(D("0.00000001"))
                    low = (open_ * D(str(lo))).quantize(D("0.00000001"))
                    prices[s] = (low * D(str(c))).quantize(D("0.00000001"))
                    p = positions.get(s)
                    if p is not None and low <= p.stop:
                        fill = min(open_, p.stop)
                        gaps += p.amount * (p.stop - fill)  # what opening below the stop cost
                        cash += p.amount * fill * (1 - half) * (1 - slip) * (1 - fee)
                        del positions[s]
                w = build(cash, {}, list(positions.values()), prices)
                await gate.on_equity(w.equity, clock.now_ms())
                worst = max(worst, (start - w.equity) / start - D("0.03") - gaps / start)
                for s in syms:
                    if s in positions:
                        continue
                    px = float(prices[s])
                    r = await gate.evaluate(opp(s, price=px, stop=px * (1 - stop_f), target=px * 1.2),
                                            markets[s], None, w)
                    if isinstance(r, Approval):
                        cost = r.amount * r.price * (1 + half) * (1 + slip)
                        cash -= cost * (1 + fee)
                        positions[s] = Position(symbol=s, strategy="t", amount=r.amount, entry_price=cost / r.amount,
                                                stop=r.stop, target=r.target, opened_ms=clock.now_ms())
                        w = build(cash, {}, list(positions.values()), prices)
            # the day ends with a stop-out of everything still open (the worst case)
            for s, p in positions.items():
                cash += p.amount * p.stop * (1 - half) * (1 - slip) * (1 - fee)
            worst = max(worst, (start - cash) / start - D("0.03") - gaps / start)
            return worst

    with tempfile.TemporaryDirectory() as d:
        worst = asyncio.run(main(Path(d) / "c.db"))
    WORST_OVERSHOOT.append(worst)
    assert worst <= D("1e-9"), f"the day lost {fmt(worst)} beyond the cap and its gaps"


def fmt(x: Decimal) -> str:
    return f"{float(x) * 100:.4f} %"


def test_report_the_worst_overshoot():
    """Prints the worst day's loss beyond the cap (net of gaps) the property test saw (<= 0: none)."""
    if WORST_OVERSHOOT:
        print(f"\nworst overshoot of the daily cap beyond gaps: {fmt(max(WORST_OVERSHOOT))}")
