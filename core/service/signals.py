"""Signals that arrive before the service loop can take them (``pitrader run`` only).

Start-up (imports of numba and ccxt, the state database, markets) takes ~1 s here and up to
~18 s on a Pi with a cold cache; until the engine installs its asyncio handlers, a SIGHUP would
kill the process (exit 129) and a SIGTERM would skip the clean stop. ``install()`` runs first
thing in the CLI, before any heavy import: it only records what came, and ``hand_over``
replays it to the engine (a reload is applied at the first cycle, a stop ends the run cleanly).
Imports nothing but the standard library on purpose.
"""
from __future__ import annotations

import signal
import threading

_STOPS = (signal.SIGTERM, signal.SIGINT)
_ALL = (signal.SIGHUP, *_STOPS)


class EarlySignals:
    """Records SIGHUP / SIGTERM / SIGINT until the engine takes over."""

    def __init__(self) -> None:
        self.reload = False
        self.stop: str | None = None  # the name of the first stop signal
        self.installed = False

    def _record(self, signum: int, _frame) -> None:
        if signum == signal.SIGHUP:
            self.reload = True
        elif self.stop is None:
            self.stop = signal.Signals(signum).name

    def install(self) -> None:
        if self.installed or threading.current_thread() is not threading.main_thread():
            return
        for sig in _ALL:
            signal.signal(sig, self._record)
        self.installed = True

    def uninstall(self) -> None:
        """Back to the defaults (a command that turned out not to be `run`)."""
        if not self.installed:
            return
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self.installed = False

    def hand_over(self, engine) -> None:
        """Install the engine's loop handlers, then pass on what arrived before them."""
        engine.install_signal_handlers()
        if self.stop is not None:
            engine.request_stop(f"{self.stop} during start-up")
        if self.reload:
            engine.request_reload()
        self.reload, self.stop = False, None


EARLY = EarlySignals()


def install_if_run(argv: list[str]) -> EarlySignals | None:
    """Install the early handlers when the command line names `run` (a cheap look before parsing)."""
    if "run" in argv:
        EARLY.install()
        return EARLY
    return None
