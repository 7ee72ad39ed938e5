"""Events a person should hear about (fills, halts, pauses, problems, health, the daily summary).

Any layer may raise one: it goes into the state database's outbox in the same transaction as
what caused it (``core.store.outbox``), and the notification sender (``core.notify``) delivers
it to the configured channels later, so a fill's message is never lost and never delays a trade.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Levels, lowest first; a channel's ``min_level`` drops the ones below it.
LEVELS = ("info", "warning", "error")

# Kinds and their default level. ``key`` (below) groups a burst of the same event for merging.
KINDS: dict[str, str] = {
    "entry_fill": "info",
    "exit_fill": "info",
    "halt": "warning",
    "resume": "info",
    "pause": "warning",
    "manual": "warning",
    "problem": "error",  # needs a person: exchange unreachable, key refused, reconciliation surprise
    "health": "warning",  # temperature, throttling, disk, memory, clock
    "start": "info",
    "stop": "info",
    "daily": "info",
    "test": "info",
}


def level_rank(level: str) -> int:
    return LEVELS.index(level)


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    text: str  # one line or a few, plain text, already formatted for a person
    ts_ms: int
    level: str = ""  # "" = the kind's default
    key: str = ""  # bursts with the same kind+key merge into one message ("" = the text)
    data: dict[str, Any] = field(default_factory=dict)  # machine-readable details (webhook JSON)
    id: int | None = None  # outbox id once stored: the delivery id receivers can de-duplicate on

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}")
        if not self.level:
            object.__setattr__(self, "level", KINDS[self.kind])
        if self.level not in LEVELS:
            raise ValueError(f"unknown event level {self.level!r}")

    @property
    def merge_key(self) -> str:
        return f"{self.kind}:{self.key or self.text}"

    def data_json(self) -> str:
        return json.dumps(self.data, default=str, sort_keys=True)
