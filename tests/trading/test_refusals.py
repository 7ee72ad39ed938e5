"""Refusal logging: INFO when a refusal starts or changes, DEBUG while it repeats, counted every time."""
from __future__ import annotations

import logging

from core.trading.refusals import RefusalLog

log = logging.getLogger("test.refusals")


def levels(caplog) -> list[tuple[int, str]]:
    out = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == log.name]
    caplog.clear()
    return out


def test_a_repeated_refusal_is_logged_once_and_counted_every_time(caplog):
    caplog.set_level(logging.DEBUG, logger=log.name)
    rl = RefusalLog()
    for cycle in range(3):
        rl.refuse(log, "XVS/USDT", "cooldown", "XVS cooldown %d", cycle)
        rl.refuse(log, "XVS/USDT", "cooldown", "XVS again in the same cycle")
        assert rl.end_cycle() == {"cooldown": 2}
        assert [lvl for lvl, _ in levels(caplog)] == ([logging.INFO] if cycle == 0 else []) + [logging.DEBUG] * (
            2 if cycle else 1)


def test_a_changed_reason_or_a_pause_logs_again(caplog):
    caplog.set_level(logging.DEBUG, logger=log.name)
    rl = RefusalLog()
    rl.refuse(log, "XVS/USDT", "cooldown", "a")
    rl.end_cycle()
    rl.refuse(log, "XVS/USDT", "cash", "b")  # another reason: new
    rl.refuse(log, "TLM/USDT", "cash", "c")  # another pair: new
    rl.end_cycle()
    assert [lvl for lvl, _ in levels(caplog)] == [logging.INFO] * 3
    rl.end_cycle()  # a cycle without XVS refused: forgotten
    rl.refuse(log, "XVS/USDT", "cash", "d")
    rl.end_cycle()
    assert levels(caplog) == [(logging.INFO, "d")]


def test_a_condition_of_every_pair_is_logged_once_for_all(caplog):
    caplog.set_level(logging.DEBUG, logger=log.name)
    rl = RefusalLog()
    for cycle in range(2):
        for sym in ("A/USDT", "B/USDT", "C/USDT"):
            rl.refuse(log, sym, "max_positions", "5 positions open")
        assert rl.end_cycle() == {"max_positions": 3}
    lines = levels(caplog)
    assert [lvl for lvl, _ in lines] == [logging.INFO] + [logging.DEBUG] * 5
    assert lines[0][1] == "5 positions open (first A/USDT; the rest are counted in the cycle summary)"
