"""Manual control of the engine (CLI, Telegram): pause and resume entries, the runtime blacklist,
closing a symbol now. Every action is logged at WARNING and audited; the pause and the blacklist
are kept in ``bot_state`` across restarts.
"""
from __future__ import annotations

import logging

from core.exchange.gateway import GatewayError
from core.log import audit

log = logging.getLogger("core.engine")  # one logger for the engine, whichever module speaks

EXCLUDED_KEY = "excluded_symbols"  # bot_state: `pitrader exclude` (symbol -> who), kept across restarts
PAUSE_KEY = "entries_paused"  # bot_state: a manual pause, kept across restarts


class ManualControl:
    """Mix-in of ``core.engine.loop.Engine``: the state an operator sets. Relies on its ``store``,
    ``clock``, ``hooks``, ``executor``, ``risk``, ``prices`` and ``storage_fault``."""

    _paused: dict | None  # a manual pause: {"by", "since_ms"}
    excluded: dict[str, str]  # runtime blacklist: symbol -> who excluded it

    async def load_manual_state(self) -> None:
        """The pause and the runtime blacklist as the store has them (start, or a CLI acting directly)."""
        self._paused = await self.store.get_state(PAUSE_KEY)
        self.excluded = dict(await self.store.get_state(EXCLUDED_KEY, {}) or {})

    async def exclude(self, symbol: str, who: str, remove: bool = False) -> bool:
        """Add ``symbol`` to (or take it off) the runtime blacklist: no new entries on it; open positions
        keep their exits. False: nothing changed."""
        if remove == (symbol not in self.excluded):
            return False
        if remove:
            del self.excluded[symbol]
        else:
            self.excluded[symbol] = who
        await self.store.set_state(EXCLUDED_KEY, self.excluded)
        log.warning("%s %s by %s", symbol, "no longer excluded" if remove else "excluded from new entries", who)
        audit("include" if remove else "exclude", symbol=symbol, by=who)
        return True

    async def pause(self, who: str) -> bool:
        """Stop new entries (exits go on) until ``resume``; survives restarts. False: already paused."""
        if self._paused is not None:
            return False
        self._paused = {"by": who, "since_ms": self.clock.now_ms()}
        await self.store.set_state(PAUSE_KEY, self._paused)
        log.warning("entries paused by %s (exits go on)", who)
        audit("pause", by=who)
        return True

    async def resume(self, who: str) -> bool:
        if self._paused is None:
            return False
        self._paused = None
        await self.store.delete_state(PAUSE_KEY)
        log.warning("entries resumed by %s", who)
        audit("resume", by=who)
        return True

    def pause_reason(self) -> str | None:
        """Why new entries are paused right now (manual, storage or health), or None."""
        if self._paused is not None:
            return f"paused by {self._paused['by']}"
        if self.storage_fault:
            return f"state database not writable ({self.storage_fault})"
        return self.hooks.entries_paused()

    async def close_symbol(self, symbol: str, who: str) -> int:
        """Sell every open position in ``symbol`` at market now; returns how many were closed."""
        positions = [p for p in self.executor.positions if p.symbol == symbol and str(p.status) == "open"]
        if not positions:
            return 0
        price = (await self.prices({symbol})).get(symbol)
        if price is None:
            raise GatewayError(f"no current price for {symbol}: nothing sold")
        for pos in positions:
            log.warning("manual close of %s #%s by %s at ~%s", pos.symbol, pos.id, who, price)
            audit("manual_close", symbol=pos.symbol, position=pos.id, by=who)
            await self.executor.close_position(pos, f"manual: {who}", price)
            self.risk.on_exit(pos.symbol, self.clock.now_ms())
        return len(positions)

