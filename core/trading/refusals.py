"""Refusal logging: a refusal is logged at INFO when it starts or changes, at DEBUG while it repeats.

Signals repeat every cycle (every 10 s live), and so would the same refusals: ~100k journal lines a
day into a journal Pi OS keeps in RAM. A refusal is keyed by pair and check (``cooldown``,
``cash``, ...); conditions that are not about the pair (a halt, all position slots taken, entries
paused) are keyed once for all pairs. A key not refused again in a cycle is forgotten, so a pair
refused again later is logged again. Every refusal is still counted, per cycle, for the summary.
"""
from __future__ import annotations

import collections
import logging

GLOBAL_CHECKS = frozenset({"halt", "max_positions", "paused"})  # the same for every pair


class RefusalLog:
    def __init__(self) -> None:
        self._last: set[tuple[str, str]] = set()  # refused in the previous cycle
        self._now: set[tuple[str, str]] = set()  # refused in this cycle
        self.counts: collections.Counter[str] = collections.Counter()  # this cycle, by check

    def refuse(self, logger: logging.Logger, symbol: str, check: str, msg: str, *args: object) -> None:
        """Count a refusal and log ``msg % args`` at INFO if it is new, else at DEBUG."""
        self.counts[check] += 1
        key = ("*" if check in GLOBAL_CHECKS else symbol, check)
        new = key not in self._last and key not in self._now
        self._now.add(key)
        level = logging.INFO if new else logging.DEBUG
        if logger.isEnabledFor(level):
            if new and key[0] == "*":
                msg, args = msg + " (first %s; the rest are counted in the cycle summary)", (*args, symbol)
            logger.log(level, msg, *args)

    def end_cycle(self) -> collections.Counter[str]:
        """This cycle's counts; what was not refused again is forgotten."""
        counts, self.counts = self.counts, collections.Counter()
        self._last, self._now = self._now, set()
        return counts
