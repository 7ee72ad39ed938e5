"""Weight budget, pauses, backoff, circuit breakers and the request guard, on a fake clock."""
import asyncio
import random

import pytest
from hypothesis import given, settings, strategies as st

from core.exchange.gateway import GatewayError, OrderRejected, RateLimited, TemporaryError
from core.exchange.ratelimit import (Backoff, CircuitBreaker, CircuitOpen, RequestGuard, WeightBudget, binance_weight)


class FakeTime:
    """Monotonic + wall time that only moves when something sleeps."""

    def __init__(self, wall0: float = 1_700_000_000.0) -> None:
        self.t = 0.0
        self.wall0 = wall0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.wall0 + self.t

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += max(0.0, s)
        await asyncio.sleep(0)


def budget(ft: FakeTime, limit=100, pct=0.5, **kw) -> WeightBudget:
    return WeightBudget(limit, pct, now=ft.now, wall=ft.wall, sleep=ft.sleep, **kw)


def test_binance_weights_follow_the_documented_table():
    assert binance_weight("klines") == 2
    assert binance_weight("exchangeInfo") == 20
    assert [binance_weight("depth", limit=n) for n in (5, 100, 101, 500, 1000, 5000)] == [5, 5, 25, 25, 50, 250]
    assert binance_weight("ticker/24hr") == 80
    assert binance_weight("ticker/24hr", symbol=True) == 2
    assert [binance_weight("ticker/24hr", symbols=n) for n in (1, 20, 21, 100, 101)] == [2, 2, 40, 40, 80]
    assert binance_weight("openOrders", symbol=True) == 6 and binance_weight("openOrders") == 80
    assert binance_weight("order:GET") == 4 and binance_weight("order:POST") == 1


def test_budget_waits_for_the_window_when_spent():
    ft = FakeTime()
    b = budget(ft)  # budget 50 of 100

    async def go():
        for _ in range(25):
            await b.acquire(2)
        assert ft.t == 0 and b.used() == 50
        await b.acquire(2)  # the 26th must wait until the first reservation leaves the 60 s window

    asyncio.run(go())
    assert ft.t == pytest.approx(60.0, abs=0.02)
    assert b.waits >= 1 and b.max_used == 50


def test_server_counter_counts_for_the_rest_of_its_minute():
    ft = FakeTime(wall0=1_700_000_080.0)  # 40 s into a wall-clock minute
    b = budget(ft)

    async def go():
        b.observe(48)  # another process on this IP spent weight we never saw
        assert b.used() == 48
        await b.acquire(2)  # 50: fits exactly
        await b.acquire(2)  # would be 52: waits for the server's minute to roll over (20 s + 1 s grace)

    asyncio.run(go())
    assert 20.9 < ft.t < 21.2
    assert b.max_server_used == 48


def test_requests_in_flight_count_on_top_of_the_server_header():
    """A reply's counter may predate requests we already sent: they must not fall through."""
    ft = FakeTime()
    b = budget(ft, limit=1000)  # budget 500

    async def go():
        for _ in range(4):
            await b.acquire(100)  # four in flight
        b.observe(150)  # the server had counted one of ours and 50 of someone else's
        assert b.used() >= 150 + 300  # the three others may still come on top
        for _ in range(4):
            b.release(100)
        b.observe(450)
        assert b.used() == 450

    asyncio.run(go())


def test_out_of_order_replies_do_not_lower_the_server_count():
    ft = FakeTime()
    b = budget(ft, limit=1000)
    b.observe(300)
    b.observe(120)  # an older reply arriving late
    assert b.used() == 300


def test_429_pause_is_sat_out_when_short_and_refused_when_long():
    ft = FakeTime()
    b = budget(ft, max_pause_wait_s=5)

    async def go():
        b.pause(3)
        await b.acquire(1)
        assert ft.t == pytest.approx(3)
        b.pause(30)
        with pytest.raises(RateLimited) as ei:
            await b.acquire(1)
        assert ei.value.retry_after_s == pytest.approx(30) and not ei.value.banned

    asyncio.run(go())


def test_418_ban_is_a_hard_stop_until_it_expires():
    ft = FakeTime()
    b = budget(ft, max_pause_wait_s=1000)

    async def go():
        b.pause(2, banned=True)
        with pytest.raises(RateLimited) as ei:  # even a short ban is never waited out inside a call
            await b.acquire(1)
        assert ei.value.banned
        await ft.sleep(2.5)
        await b.acquire(1)
        assert not b.banned

    asyncio.run(go())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 30), st.floats(0, 20)), min_size=1, max_size=80),
       st.lists(st.tuples(st.integers(0, 60), st.floats(0, 30)), max_size=10))
def test_budget_property_never_exceeded_in_any_60s_window(requests, server_reports):
    """Whatever the request weights and timing, the weight reserved in any 60 s window stays
    within the budget (a single request larger than the budget is allowed alone)."""
    ft = FakeTime()
    b = budget(ft, limit=200, pct=0.5)
    log: list[tuple[float, int]] = []
    reports = sorted(server_reports, key=lambda r: r[1])

    async def go():
        for w, gap in requests:
            while reports and reports[0][1] <= ft.t:
                b.observe(reports.pop(0)[0])
            await b.acquire(w)
            log.append((ft.t, w))
            await ft.sleep(gap)

    asyncio.run(go())
    for t, _ in log:
        in_window = sum(w for u, w in log if t - 60 < u <= t)
        assert in_window <= b.budget


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    bo = Backoff(base_s=0.1, cap_s=2.0, rng=random.Random(1))
    for attempt in range(8):
        d = min(2.0, 0.1 * 2 ** attempt)
        samples = [bo.delay(attempt) for _ in range(50)]
        assert all(d / 2 <= s <= d for s in samples)
        assert len(set(samples)) > 10  # jittered, not lockstep


def test_breaker_ignores_a_few_bad_pairs_but_opens_on_an_outage():
    ft = FakeTime()
    br = CircuitBreaker("market", window=20, min_calls=8, failure_ratio=0.6, cooldown_s=5, now=ft.now)
    for i in range(200):  # 1 in 10 fails (a bad pair): stays closed
        br.before_call()
        br.record(i % 10 != 0)
    assert br.state == "closed"
    failures = 0
    while br.state == "closed":  # an outage: everything fails
        br.before_call()
        br.record(False)
        failures += 1
    assert failures <= 12  # recognised within 60 % of the window
    with pytest.raises(CircuitOpen):
        br.before_call()
    ft.t += 5.1
    br.before_call()  # half open: one probe
    with pytest.raises(CircuitOpen):
        br.before_call()  # no second probe while the first runs
    br.record(False)  # probe failed: open again, twice as long
    assert br.state == "open" and br.open_until - ft.t == pytest.approx(10)
    ft.t += 10.1
    br.before_call()
    br.record(True)
    assert br.state == "closed"
    br.before_call()


def guard(ft: FakeTime, **kw) -> RequestGuard:
    b = budget(ft, limit=10_000, max_pause_wait_s=5)
    return RequestGuard(b, concurrency=4, timeout_s=kw.pop("timeout_s", 1.0), retries=kw.pop("retries", 2),
                        backoff=Backoff(0.1, 1.0, random.Random(0)), sleep=ft.sleep, **kw)


def test_guard_retries_temporary_errors_with_backoff_then_gives_up():
    ft = FakeTime()
    g = guard(ft)
    calls = []

    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise TemporaryError("502")
        return "ok"

    assert asyncio.run(g.run("market", 2, flaky)) == "ok"
    assert len(calls) == 3 and len(ft.slept) == 2 and ft.slept[1] > ft.slept[0] / 2

    async def broken():
        raise TemporaryError("down")

    with pytest.raises(TemporaryError):
        asyncio.run(g.run("market", 2, broken))


def test_guard_never_retries_rejections_or_when_told_not_to():
    ft = FakeTime()
    g = guard(ft)
    n = []

    async def rejected():
        n.append(1)
        raise OrderRejected("insufficient balance")

    with pytest.raises(OrderRejected):
        asyncio.run(g.run("orders", 1, rejected))
    assert len(n) == 1

    async def ambiguous():
        n.append(1)
        raise TemporaryError("timeout")

    with pytest.raises(TemporaryError):
        asyncio.run(g.run("orders", 1, ambiguous, retries=0))
    assert len(n) == 2


def test_guard_times_out_a_hung_call():
    g = RequestGuard(WeightBudget(1000, 0.5), timeout_s=0.05, retries=0)

    async def hang():
        await asyncio.sleep(10)

    with pytest.raises(TemporaryError, match="no reply within"):
        asyncio.run(g.run("market", 1, hang))


def test_guard_honours_retry_after_then_succeeds():
    ft = FakeTime()
    g = guard(ft)
    n = []

    async def limited():
        n.append(ft.t)
        if len(n) == 1:
            raise RateLimited("429", retry_after_s=2.0)
        return 1

    assert asyncio.run(g.run("market", 2, limited)) == 1
    assert n[1] - n[0] == pytest.approx(2.0)

    async def banned():
        raise RateLimited("418", retry_after_s=3.0, banned=True)

    with pytest.raises(RateLimited):
        asyncio.run(g.run("market", 2, banned))
    with pytest.raises(RateLimited) as ei:  # and nothing else gets sent during the ban
        asyncio.run(g.run("market", 2, limited))
    assert ei.value.banned and len(n) == 2


def test_guard_bounds_concurrency():
    g = RequestGuard(WeightBudget(100_000, 0.5), concurrency=3, timeout_s=5)
    live = [0]
    peak = [0]

    async def call():
        live[0] += 1
        peak[0] = max(peak[0], live[0])
        await asyncio.sleep(0.005)
        live[0] -= 1
        return 1

    async def go():
        return await asyncio.gather(*(g.run("market", 1, call) for _ in range(20)))

    assert sum(asyncio.run(go())) == 20
    assert peak[0] == 3


def test_open_breaker_fails_fast_without_spending_weight():
    ft = FakeTime()
    g = guard(ft, retries=0, breaker=lambda name: CircuitBreaker(name, min_calls=4, cooldown_s=30, now=ft.now))

    async def down():
        raise TemporaryError("503")

    for _ in range(4):
        with pytest.raises(TemporaryError):
            asyncio.run(g.run("market", 2, down))
    sent = g.budget.requests
    with pytest.raises(CircuitOpen):
        asyncio.run(g.run("market", 2, down))
    assert g.budget.requests == sent
    # another family is unaffected
    async def ok():
        return 7

    assert asyncio.run(g.run("orders", 1, ok)) == 7


def test_gateway_errors_are_not_swallowed():
    ft = FakeTime()
    g = guard(ft)

    async def bad():
        raise GatewayError("unknown symbol")

    with pytest.raises(GatewayError, match="unknown symbol"):
        asyncio.run(g.run("market", 1, bad))


# --- log once per event ------------------------------------------------------------------------

def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_429s_of_requests_in_flight_are_one_event(caplog):
    ft = FakeTime()
    b = budget(ft)
    b.pause(1)
    for _ in range(6):  # the other requests in flight get their 429 a little later
        ft.t += 0.01
        b.pause(1)
    assert _warnings(caplog) == ["exchange rate limit hit (429): no requests for 1 s"]
    ft.t += 5
    b.pause(2)  # a new event once the first pause is over
    assert len(_warnings(caplog)) == 2


def test_a_ban_is_said_once_with_its_end_however_many_requests_are_refused(caplog):
    ft = FakeTime(wall0=1_700_000_000.0)  # 2023-11-14 22:13:20 UTC
    g = guard(ft)
    sent = []

    async def banned():
        sent.append(1)
        raise RateLimited("418", retry_after_s=120.0, banned=True)

    async def go():
        for _ in range(50):  # a scan's worth of requests during the ban
            with pytest.raises(RateLimited):
                await g.run("market", 2, banned)
            ft.t += 0.1

    asyncio.run(go())
    assert len(sent) == 1  # the rest were refused before sending
    assert _warnings(caplog) == ["exchange banned this IP (418) until 22:15:20 UTC: no requests for 120 s"]


# --- hedged reads: a hung request must not hold a slot for its whole timeout ----------------------

def hedging_guard(concurrency=4, timeout_s=5.0, **kw) -> RequestGuard:
    return RequestGuard(WeightBudget(100_000, 0.5), concurrency=concurrency, timeout_s=timeout_s, retries=2,
                        backoff=Backoff(0.01, 0.02, random.Random(0)), hedge_min_s=0.01, hedge_max_s=0.01, **kw)


def test_a_hung_read_is_answered_by_its_twin_and_the_hung_one_cancelled():
    g = hedging_guard()
    calls, cancelled = [], []

    async def read():
        calls.append(1)
        if len(calls) == 1:
            try:
                await asyncio.Event().wait()  # hangs
            except asyncio.CancelledError:
                cancelled.append(1)
                raise
        return "ok"

    assert asyncio.run(g.run("market", 2, read, hedge=True)) == "ok"
    assert len(calls) == 2 and cancelled == [1] and g.hedged == 1 and g.hedge_wins == 1
    assert g.budget.inflight == 0 and g.failures == 0  # the loser's weight released; no failure counted


def test_hung_requests_do_not_starve_the_others():
    """Every 10th request hangs, with 4 slots: without twins the hung ones hold every slot until
    they time out, and each counts as a failure for the circuit breaker."""
    g = hedging_guard(concurrency=4)
    n = [0]

    async def read():
        n[0] += 1
        if n[0] % 10 == 1:
            await asyncio.Event().wait()
        return 1

    async def go():
        return await asyncio.gather(*(g.run("market", 2, read, hedge=True) for _ in range(40)))

    assert sum(asyncio.run(go())) == 40
    assert g.failures == 0 and g.retried == 0 and g.breaker("market").state == "closed"
    assert 4 <= g.hedged <= 8


def test_twins_are_bounded_and_never_sent_for_what_must_not_repeat():
    g = hedging_guard(timeout_s=0.1)
    g.retries = 0
    calls = []

    async def hang():
        calls.append(1)
        await asyncio.Event().wait()

    with pytest.raises(TemporaryError, match="no reply within"):
        asyncio.run(g.run("market", 2, hang, hedge=True))
    assert len(calls) == 1 + RequestGuard.MAX_HEDGES
    calls.clear()
    with pytest.raises(TemporaryError, match="no reply within"):
        asyncio.run(g.run("orders", 1, hang, retries=0))  # an order: hedge not asked for
    assert calls == [1]


def test_a_definite_answer_from_a_twin_ends_the_race():
    g = hedging_guard()
    calls = []

    async def read():
        calls.append(1)
        if len(calls) == 1:
            await asyncio.Event().wait()
        raise OrderRejected("unknown symbol")

    with pytest.raises(OrderRejected):
        asyncio.run(g.run("orders", 4, read, hedge=True))
    assert len(calls) == 2


def test_hedge_delay_follows_the_median_latency_within_its_bounds():
    g = RequestGuard(WeightBudget(100_000, 0.5), timeout_s=10, hedge_min_s=0.5, hedge_max_s=5.0)
    assert g.hedge_delay() == 5.0  # no latency known yet: the cautious end

    async def fast():
        return 1

    async def go():
        for _ in range(RequestGuard.HEDGE_SAMPLES):
            await g.run("market", 1, fast, hedge=True)

    asyncio.run(go())
    assert g.hedge_delay() == 0.5  # loopback-fast replies: the floor, never sooner
