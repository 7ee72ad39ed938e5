"""Delivers the outbox to every channel: at least once, merged, rate-limited, never in the way.

The sender has its own SQLite connection (WAL lets it read while the engine writes) and its own
task, so a slow or dead chat service can never delay a scan, an order or an exit. Per channel:

- pending events are read in id order; those the channel does not want are recorded as done;
- events with the same kind and key form a group: a burst (50 errors in a minute) becomes one
  message with a count; a key sent less than ``merge_window_s`` ago is held until the window
  ends and then goes out as one merged message;
- at most ``max_per_minute`` messages a minute (and ``min_interval_s`` apart); past that the
  rest of the backlog goes out as one digest;
- a failed delivery is retried with exponential backoff (or the service's Retry-After), for as
  long as it takes: nothing is dropped for an outage. A message the service refuses as such
  (HTTP 400) is logged and skipped; a misconfigured channel (bad token, unknown chat) is logged
  once and retried every few minutes.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import aiohttp
import aiosqlite

from core.events import Event
from core.notify.channels import Channel, DeliveryError, Message
from core.store import outbox

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 300.0
PRUNE_EVERY_S = 3600.0


def _hhmm(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, timezone.utc).strftime("%H:%M UTC")


def _prefix(event: Event) -> str:
    return "" if event.level == "info" else f"[{event.level.upper()}] "


def message_for(group: list[Event]) -> Message:
    """One event as it is; a burst as its newest text with the count and the time it began."""
    last = group[-1]
    text = _prefix(last) + last.text
    if len(group) > 1:
        text += f"\n(x{len(group)} since {_hhmm(group[0].ts_ms)})"
    return Message(tuple(group), text)


def digest_for(groups: list[list[Event]], max_lines: int = 30) -> Message:
    events = [e for g in groups for e in g]
    lines = [f"{len(events)} more events:"]
    for g in groups[:max_lines]:
        lines.append(("" if len(g) == 1 else f"x{len(g)} ") + _prefix(g[-1]) + g[-1].text.split("\n", 1)[0])
    if len(groups) > max_lines:
        lines.append(f"... and {len(groups) - max_lines} more kinds")
    return Message(tuple(events), "\n".join(lines), digest=True)


class _ChannelState:
    def __init__(self) -> None:
        self.retry_at = 0.0
        self.failures = 0
        self.failing_since: float | None = None
        self.last_sent: dict[str, float] = {}
        self.sent_times: collections.deque[float] = collections.deque()
        self.next_send = 0.0


class Sender:
    def __init__(self, db_path: str | Path, channels: list[Channel], *, timeout_s: float = 10.0,
                 merge_window_s: float = 60.0, min_interval_s: float = 1.0, max_per_minute: int = 20,
                 poll_s: float = 2.0, gather_s: float = 0.5, clock: Callable[[], float] = time.monotonic,
                 keep_days: float = 30.0, wall_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self.db_path = Path(db_path)
        self.channels = channels
        self.timeout_s, self.merge_window_s = timeout_s, merge_window_s
        self.min_interval_s, self.max_per_minute = min_interval_s, max_per_minute
        self.poll_s, self.gather_s = poll_s, gather_s
        self.clock = clock
        self.keep_days, self.wall_ms = keep_days, wall_ms
        self._pruned_at: float | None = None
        self._db_lock = asyncio.Lock()  # our connection is shared by the delivery task and ``add``
        self._state = {c.name: _ChannelState() for c in channels}
        self._wake = asyncio.Event()
        self._db: aiosqlite.Connection | None = None
        self._session: aiohttp.ClientSession | None = None
        self.delivered = 0

    # --- lifecycle ------------------------------------------------------------------------------
    async def open(self) -> None:
        self._db = await outbox.connect(self.db_path)
        for ch in self.channels:
            await outbox.start_channel(self._db, ch.name)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def add(self, event: Event) -> int:
        """Write an event through our own connection (for tasks outside the engine's loop)."""
        assert self._db is not None, "open() first"
        async with self._db_lock:
            async with outbox.transaction(self._db):
                event_id = await outbox.add_event(self._db, event)
        self.wake()
        return event_id

    async def prune(self) -> int:
        """Forget events every channel is past and older than ``keep_days``: the outbox must not
        grow for as long as the service runs."""
        assert self._db is not None, "open() first"
        async with self._db_lock:
            floor = await outbox.min_cursor(self._db, [c.name for c in self.channels])
            async with outbox.transaction(self._db):
                n = await outbox.prune(self._db, self.wall_ms() - int(self.keep_days * 86_400_000), floor)
        return n

    def wake(self) -> None:
        """An event was just written: look now instead of at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set, then try for a moment to flush what is pending."""
        while not stop.is_set():
            try:
                await self.deliver_once()
            except (aiosqlite.Error, OSError) as exc:  # the store's own faults are handled by the engine
                log.warning("notifications: cannot read the outbox (%s); will retry", exc.__class__.__name__)
            except Exception as exc:  # noqa: BLE001 - a dead sender would lose every later notification
                log.error("notifications: delivery pass failed (%s); will retry", exc.__class__.__name__)
            if self._pruned_at is None or self.clock() - self._pruned_at >= PRUNE_EVERY_S:
                self._pruned_at = self.clock()
                try:
                    await self.prune()
                except (aiosqlite.Error, OSError) as exc:
                    log.warning("notifications: cannot prune the outbox (%s)", exc.__class__.__name__)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_s)
                await asyncio.sleep(self.gather_s)  # let a burst finish arriving, then merge it
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def drain(self, seconds: float = 3.0) -> None:
        """At shutdown: a short, bounded attempt to deliver the last events (the rest waits)."""
        try:
            await asyncio.wait_for(self.deliver_once(hold=False), timeout=seconds)
        except (asyncio.TimeoutError, aiosqlite.Error, OSError):
            pass

    # --- one pass -------------------------------------------------------------------------------
    async def deliver_once(self, hold: bool = True) -> int:
        """One pass over every channel; returns the messages delivered."""
        assert self._db is not None and self._session is not None, "open() first"
        sent = 0
        for ch in self.channels:
            sent += await self._deliver(ch, self._state[ch.name], hold)
        self.delivered += sent
        return sent

    async def _deliver(self, ch: Channel, st: _ChannelState, hold: bool) -> int:
        now = self.clock()
        if now < st.retry_at:
            return 0
        events = await outbox.pending(self._db, ch.name)
        unwanted = [e.id for e in events if not ch.accepts(e)]
        if unwanted:
            async with self._db_lock:
                await outbox.mark_sent(self._db, ch.name, unwanted)
        groups: dict[str, list[Event]] = {}
        for e in events:
            if ch.accepts(e):
                groups.setdefault(e.merge_key, []).append(e)
        ready = [g for k, g in groups.items()
                 if not hold or now - st.last_sent.get(k, -1e18) >= self.merge_window_s]
        while st.sent_times and now - st.sent_times[0] >= 60:
            st.sent_times.popleft()
        budget = self.max_per_minute - len(st.sent_times)
        if budget <= 0 or not ready:
            return 0
        messages = [message_for(g) for g in ready[:budget - 1]]
        rest = ready[budget - 1:]
        messages += [message_for(rest[0])] if len(rest) == 1 else [digest_for(rest)] if rest else []
        sent = 0
        for msg in messages:
            wait = st.next_send - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                await ch.send(self._session, msg)
            except DeliveryError as exc:
                if exc.retryable or exc.config:
                    self._failed(ch, st, exc)
                    return sent
                log.warning("notifications: %s refused a %s message (%s); skipped", ch.name, msg.kind, exc)
            else:
                sent += 1
                self._recovered(ch, st)
            t = self.clock()
            st.sent_times.append(t)
            st.next_send = t + self.min_interval_s
            for e in msg.events:
                st.last_sent[e.merge_key] = t
            async with self._db_lock:
                await outbox.mark_sent(self._db, ch.name, [e.id for e in msg.events])
        return sent

    def _failed(self, ch: Channel, st: _ChannelState, exc: DeliveryError) -> None:
        st.failures += 1
        delay = min(MAX_BACKOFF_S, 2.0 ** st.failures) if not exc.config else MAX_BACKOFF_S
        if exc.retry_after is not None:  # the service said when: believe it (at least a second)
            delay = max(1.0, exc.retry_after)
        st.retry_at = self.clock() + delay
        if st.failing_since is None:
            st.failing_since = self.clock()
            if exc.config:
                log.error("notifications: %s refuses our messages (%s): check its token / chat id; "
                          "retrying every %.0f s", ch.name, exc, MAX_BACKOFF_S)
            else:
                log.warning("notifications: %s: delivery failed (%s); will retry, nothing is lost", ch.name, exc)

    def _recovered(self, ch: Channel, st: _ChannelState) -> None:
        if st.failing_since is not None:
            log.info("notifications: %s delivering again after %.0f s", ch.name, self.clock() - st.failing_since)
        st.failures, st.failing_since, st.retry_at = 0, None, 0.0
