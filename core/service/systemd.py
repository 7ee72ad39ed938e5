"""systemd notify protocol (sd_notify) for the service loop, over the ``sdnotify`` package.

Everything is a no-op without ``$NOTIFY_SOCKET`` (a terminal, a test, another init system), so the
engine calls it unconditionally. The watchdog is progress-driven: :class:`Heartbeat` pings
``WATCHDOG=1`` only if the loop reported progress since the previous ping, or is waiting on the
exchange (every request has a deadline), so a hung cycle stops the pings and systemd restarts the
service after ``WatchdogSec=``, while a slow or hanging exchange does not.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
import unicodedata
from typing import Callable, Mapping

log = logging.getLogger(__name__)

STATUS_MAX = 200  # systemctl status shows one line; keep it readable

_SPACES = re.compile(r"\s+")
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
# Symbols a status line plausibly contains, spelled in ASCII instead of dropped.
_ASCII_FOR = str.maketrans({"\u2192": "->", "\u2190": "<-", "\u2026": "...", "\u00b1": "+/-", "\u00d7": "x",
                            "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u20ac": "EUR", "\u00a3": "GBP",
                            "\u00b0": " deg", "\u2044": "/", "\u00b7": "|", "\u2022": "|"})


def ascii_line(text: str, limit: int = STATUS_MAX) -> str:
    """One printable ASCII line: accents folded ("é" -> "e"), other non-ASCII dropped, whitespace
    (newlines included) collapsed, cut at ``limit`` with "...". sdnotify would silently drop the
    whole message for text outside latin-1."""
    folded = unicodedata.normalize("NFKD", _ANSI.sub("", str(text))).translate(_ASCII_FOR)
    chars = [c if " " <= c <= "~" else (" " if c.isspace() or unicodedata.category(c)[0] == "C" else "")
             for c in folded if not unicodedata.combining(c)]
    line = _SPACES.sub(" ", "".join(chars)).strip()
    if len(line) > limit:
        line = line[: max(limit - 3, 0)].rstrip() + "..."
    return line


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """Half of the ``WatchdogSec=`` period (the interval to ping at), or None when no watchdog
    is armed for this process."""
    environ = os.environ if environ is None else environ
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None  # armed for another process (we were started by it)
    return int(usec) / 1e6 / 2


class Notifier:
    """Sends sd_notify messages; silent no-op without ``$NOTIFY_SOCKET``.

    A failing socket is logged once at warning level and never raises: the trading loop must not
    die because systemd went away.
    """

    def __init__(self) -> None:
        self.socket_path = os.environ.get("NOTIFY_SOCKET") or None
        self._notifier = None
        self._warned = False
        self._lock = threading.Lock()
        if self.socket_path is None:
            return
        import sdnotify

        try:
            self._notifier = sdnotify.SystemdNotifier(debug=True)  # reads $NOTIFY_SOCKET, "@" = abstract
        except OSError as exc:
            self._warn(exc)

    @property
    def enabled(self) -> bool:
        return self._notifier is not None

    def _warn(self, exc: Exception) -> None:
        if not self._warned:
            self._warned = True
            log.warning("systemd notify socket %s unusable (%s); notifications disabled",
                        self.socket_path, exc.__class__.__name__)

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; True if it was sent."""
        if self._notifier is None:
            return False
        message = "\n".join(assignments)
        try:
            with self._lock:
                self._notifier.notify(message)
        except OSError as exc:
            self._warn(exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up (or a reload) is complete."""
        return self.send("READY=1", *([f"STATUS={ascii_line(status)}"] if status else []))

    def status(self, text: str) -> bool:
        """The line `systemctl status pitrader` shows, e.g. after each cycle."""
        return self.send(f"STATUS={ascii_line(text)}")

    def watchdog(self) -> bool:
        """A keep-alive. Only :class:`Heartbeat` should call this, and only on progress."""
        return self.send("WATCHDOG=1")

    def reloading(self, status: str | None = "reloading configuration") -> bool:
        """SIGHUP received; follow with :meth:`ready` when done. MONOTONIC_USEC is what systemd
        >= 253 (Type=notify-reload) uses to match the reload to its request."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}",
                         *([f"STATUS={ascii_line(status)}"] if status else []))

    def stopping(self, status: str | None = "stopping") -> bool:
        return self.send("STOPPING=1", *([f"STATUS={ascii_line(status)}"] if status else []))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start-up (or stop) time: a first scan of many pairs on a slow link can
        outlast ``TimeoutStartSec=``; call it with progress, never blindly in a loop."""
        return self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")


class Heartbeat:
    """Progress-driven watchdog.

    The engine calls :meth:`progress` after each completed step of a cycle (and :meth:`sleep`
    instead of ``asyncio.sleep`` between cycles). :meth:`run` (a background task) pings every
    ``interval_s`` only if progress was reported since the previous ping, so a step that never
    completes lets ``WatchdogSec=`` expire. When the whole event loop blocks, the task does not
    run at all: same outcome.

    ``network`` (``core.exchange.activity.NETWORK.snapshot``: requests in flight, requests ended)
    counts as progress too: a cycle retrying a hanging exchange is a live loop waiting on the
    network with a deadline on every request (issue 15: 90 s of load-markets / universe / tickers
    retries without a ping against ``WatchdogSec=60``). A step stuck anywhere else sends no
    request and still misses its pings.
    """

    def __init__(self, notifier: Notifier, interval_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 network: Callable[[], tuple[int, int]] | None = None) -> None:
        self.notifier = notifier
        self.interval_s = watchdog_interval_s() if interval_s is None else interval_s
        self._clock = clock
        self._progress = False
        self.last_progress = clock()
        self.pings = 0
        self.network_pings = 0  # pings earned by waiting on the exchange alone
        self._network = network
        self._seen_ended = network()[1] if network else 0

    @property
    def enabled(self) -> bool:
        return bool(self.interval_s) and self.notifier.enabled

    def progress(self) -> None:
        """The loop completed a step. Cheap; safe from any thread."""
        self._progress = True
        self.last_progress = self._clock()

    def stalled_for(self) -> float:
        """Seconds since the last progress (for a STATUS line or a log message)."""
        return self._clock() - self.last_progress

    def _waiting_on_network(self) -> bool:
        """A request is in flight now, or one ended since the previous look."""
        if self._network is None:
            return False
        in_flight, ended = self._network()
        active = in_flight > 0 or ended != self._seen_ended
        self._seen_ended = ended
        return active

    def tick(self) -> bool:
        """Ping if there was progress (or a network wait) since the last tick; True if a ping was sent."""
        waiting = self._waiting_on_network()
        if not self._progress and not waiting:
            return False
        if not self._progress:
            self.network_pings += 1
        self._progress = False
        if self.notifier.watchdog():
            self.pings += 1
            return True
        return False

    async def run(self) -> None:
        """Ping loop; cancel it on shutdown. Returns at once when no watchdog is armed."""
        if not self.enabled:
            return
        assert self.interval_s is not None
        warned = False
        while True:
            await asyncio.sleep(self.interval_s)
            if self.tick():
                warned = False
            elif not warned and self.stalled_for() >= self.interval_s:
                warned = True  # once per stall: the journal says why systemd is about to kill us
                log.warning("no progress for %.0f s: withholding the watchdog ping", self.stalled_for())

    def start(self) -> asyncio.Task | None:
        """Start :meth:`run` on the running loop; None when no watchdog is armed."""
        if not self.enabled:
            return None
        return asyncio.get_running_loop().create_task(self.run(), name="watchdog")

    async def sleep(self, seconds: float) -> None:
        """Sleep between cycles while staying alive for the watchdog: waiting on purpose is
        progress, so a long ``scanner.interval_s`` does not look like a hang."""
        end = self._clock() + max(seconds, 0.0)
        step = max((self.interval_s or seconds or 1.0) / 2, 0.05)
        while True:
            self.progress()
            left = end - self._clock()
            if left <= 0:
                return
            await asyncio.sleep(min(step, left))
