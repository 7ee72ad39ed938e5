"""core/service/systemd.py against a real unix datagram socket standing in for systemd's notify socket."""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.service.systemd import STATUS_MAX, Heartbeat, Notifier, ascii_line, watchdog_interval_s


class FakeSystemd:
    """Receives what the service would send to systemd."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)

    def messages(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode("latin-1"))
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd(monkeypatch):
    d = tempfile.mkdtemp(prefix="pt-notify-", dir="/tmp")  # short: sun_path has 108 bytes
    path = os.path.join(d, "notify.sock")
    fake = FakeSystemd(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield fake
    fake.close()
    shutil.rmtree(d, ignore_errors=True)


def test_without_notify_socket_everything_is_a_silent_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    assert not any([n.ready(), n.status("x"), n.watchdog(), n.reloading(), n.stopping(), n.extend_timeout(5)])
    hb = Heartbeat(n, interval_s=0.01)
    assert not hb.enabled and hb.start() is None


def test_lifecycle_messages(systemd):
    n = Notifier()
    assert n.enabled
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.ready("126 pairs in 0.9s | 2 open | day +0.4% | next 8s")
    n.status("scan 2\nfailed: 日本 → retry")
    n.reloading()
    n.ready()
    n.stopping()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    msgs = systemd.messages()
    assert msgs[0] == "READY=1\nSTATUS=126 pairs in 0.9s | 2 open | day +0.4% | next 8s"
    assert msgs[1] == "STATUS=scan 2 failed: -> retry"
    reload_lines = msgs[2].split("\n")
    assert reload_lines[0] == "RELOADING=1"
    usec = int(reload_lines[1].removeprefix("MONOTONIC_USEC="))
    assert before <= usec <= after  # CLOCK_MONOTONIC in microseconds, what systemd compares with
    assert msgs[3] == "READY=1"
    assert msgs[4].startswith("STOPPING=1")
    assert len(msgs) == 5


def test_abstract_socket_address(monkeypatch):
    name = f"pitrader-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert Notifier().ready()
        assert sock.recv(100) == b"READY=1"
    finally:
        sock.close()


def test_vanished_socket_warns_once_and_never_raises(systemd, caplog):
    n = Notifier()
    systemd.close()
    os.unlink(os.environ["NOTIFY_SOCKET"])
    with caplog.at_level(logging.WARNING, logger="core.service.systemd"):
        assert n.status("a") is False
        assert n.watchdog() is False
    assert len([r for r in caplog.records if "notify socket" in r.getMessage()]) == 1


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_property_status_is_one_printable_ascii_line(text):
    line = ascii_line(text)
    assert len(line) <= STATUS_MAX
    assert all(" " <= c <= "~" for c in line)
    assert line == line.strip()
    line.encode("latin-1")  # what sdnotify encodes with: must never fail silently


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=STATUS_MAX))
def test_property_plain_ascii_status_unchanged(text):
    assert ascii_line(text) == text


@pytest.mark.parametrize("env,expected", [
    ({"WATCHDOG_USEC": "60000000"}, 30.0),
    ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
    ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None),  # armed for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval(env, expected):
    assert watchdog_interval_s(env) == expected


def watchdogs(msgs: list[str]) -> int:
    return sum(m == "WATCHDOG=1" for m in msgs)


def test_heartbeat_pings_only_while_the_loop_makes_progress(systemd, caplog):
    """A cycle that hangs must stop the WATCHDOG=1 pings so systemd's WatchdogSec fires."""
    interval = 0.05
    n = Notifier()
    hb = Heartbeat(n, interval_s=interval)
    assert hb.enabled
    hang = asyncio.Event()

    async def engine(stuck_for: float) -> None:
        end = time.monotonic() + 0.4
        while time.monotonic() < end:  # healthy cycles: a step completes every 10 ms
            await asyncio.sleep(0.01)
            hb.progress()
        systemd.messages()
        await asyncio.sleep(interval * 2.5)  # the last progress may still earn one ping
        assert watchdogs(systemd.messages()) <= 1
        try:
            await asyncio.wait_for(hang.wait(), stuck_for)  # a step that never completes
        except asyncio.TimeoutError:
            pass
        assert watchdogs(systemd.messages()) == 0  # stuck: no pings at all
        end = time.monotonic() + 0.3
        while time.monotonic() < end:  # recovered
            await asyncio.sleep(0.01)
            hb.progress()

    async def main() -> None:
        task = hb.start()
        systemd.messages()
        await engine(stuck_for=0.5)
        task.cancel()

    with caplog.at_level(logging.WARNING, logger="core.service.systemd"):
        asyncio.run(main())
    assert watchdogs(systemd.messages()) >= 2  # pings resumed after the stall
    assert any("withholding the watchdog ping" in r.getMessage() for r in caplog.records)
    assert hb.pings >= 4  # healthy phases pinged at about every interval


def test_blocked_event_loop_sends_no_pings(systemd):
    hb = Heartbeat(Notifier(), interval_s=0.05)

    async def main() -> None:
        task = hb.start()
        hb.progress()
        time.sleep(0.4)  # synchronous hang: the ping task cannot run
        n_during = watchdogs(systemd.messages())
        task.cancel()
        assert n_during == 0

    asyncio.run(main())


def test_heartbeat_sleep_counts_as_progress(systemd):
    """A long scan interval is waiting on purpose, not a hang."""
    hb = Heartbeat(Notifier(), interval_s=0.05)

    async def main() -> None:
        task = hb.start()
        await hb.sleep(0.4)
        task.cancel()

    asyncio.run(main())
    assert watchdogs(systemd.messages()) >= 4


def test_heartbeat_disabled_without_watchdog(systemd, monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    hb = Heartbeat(Notifier())
    assert hb.interval_s is None and not hb.enabled

    async def main() -> None:
        assert hb.start() is None
        await hb.sleep(0.05)

    asyncio.run(main())
    assert systemd.messages() == []


def test_waiting_on_a_hanging_exchange_keeps_the_pings_coming(systemd):
    """A cycle that retries hung requests makes no progress, but its loop is alive: every
    request has a deadline. Only when the loop is stuck elsewhere do the pings stop (issue 15)."""
    from core.exchange.activity import NetworkWaits
    from core.exchange.gateway import TemporaryError
    from core.exchange.ratelimit import Backoff, CircuitBreaker, RequestGuard, WeightBudget

    network = NetworkWaits()
    hb = Heartbeat(Notifier(), interval_s=0.05, network=network.snapshot)
    guard = RequestGuard(WeightBudget(100_000, 0.5), timeout_s=0.1, retries=3, backoff=Backoff(0.02, 0.04),
                         network=network, breaker=lambda name: CircuitBreaker(name, min_calls=100))

    async def hung():
        await asyncio.Event().wait()

    received: list[str] = []

    async def drain() -> None:  # a full datagram queue would block the sender (as systemd never does)
        while True:
            received.extend(systemd.messages())
            await asyncio.sleep(0.01)

    async def main() -> tuple[int, int]:
        systemd.messages()
        drainer = asyncio.get_running_loop().create_task(drain())
        task = hb.start()
        for what in ("load markets", "universe", "tickers"):  # sequential retries, no progress reported
            with pytest.raises(TemporaryError):
                await guard.run("market", 1, hung, what=what)
        await asyncio.sleep(0.02)
        waiting = watchdogs(received)
        received.clear()
        await asyncio.sleep(0.4)  # stuck without a request: no pings
        stuck = watchdogs(received)
        task.cancel()
        drainer.cancel()
        return waiting, stuck

    waiting, stuck = asyncio.run(main())
    assert waiting >= 4 and hb.network_pings >= 4  # ~1.2 s of retries at a 0.05 s interval
    assert stuck <= 1  # at most the ping earned by the last request's end
    assert network.snapshot() == (0, 12)
