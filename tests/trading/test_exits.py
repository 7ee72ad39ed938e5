"""Exit rules: stop, trailing stop from the high since entry, take-profit, time limit."""
from __future__ import annotations

from decimal import Decimal

import pytest

from core.config import TradingConfig
from core.trading.exits import exit_reason
from core.models import Position

D = Decimal
T0 = 1_625_097_600_000
H = 3_600_000


def pos(**kw) -> Position:
    base = dict(symbol="ETH/USDT", strategy="t", amount=D("0.5"), entry_price=D("2000"), stop=D("1940"),
                target=D("2120"), opened_ms=T0, id=7, highest=D("2000"))
    base.update(kw)
    return Position(**base)


def test_stop_loss_take_profit_and_nothing_between():
    cfg = TradingConfig(max_hold_hours=0)
    p = pos()
    assert exit_reason(p, D("1990"), T0 + H, cfg) is None
    assert exit_reason(p, D("1940"), T0 + H, cfg) == "stop_loss"  # at the stop counts
    assert exit_reason(p, D("1700"), T0 + H, cfg) == "stop_loss"  # a gap through it too
    assert exit_reason(p, D("2120"), T0 + H, cfg) == "take_profit"


def test_trailing_stop_follows_the_high_since_entry():
    cfg = TradingConfig(trailing_stop_pct=0.02, max_hold_hours=0, take_profit_pct=0.5)
    p = pos(target=D("3000"))
    for price in ("2010", "2100", "2080"):
        assert exit_reason(p, D(price), T0 + H, cfg) is None
    assert p.highest == D("2100")  # the high is remembered on the position
    # trail = 2100 * 0.98 = 2058: above the fixed stop, so it is what fires
    assert exit_reason(p, D("2058.5"), T0 + H, cfg) is None
    assert exit_reason(p, D("2058"), T0 + H, cfg) == "trailing_stop"
    # the higher of the two levels is the one that counts: with a tight fixed stop that is the stop
    q = pos(stop=D("1980"), target=D("3000"))  # trail 2000 * 0.98 = 1960
    assert exit_reason(q, D("1975"), T0 + H, cfg) == "stop_loss"
    r = pos(target=D("3000"))  # stop 1940, trail 1960: a gap below both was the trail's exit
    assert exit_reason(r, D("1900"), T0 + H, cfg) == "trailing_stop"


def test_position_trail_fixed_at_entry_wins_over_config():
    cfg = TradingConfig(trailing_stop_pct=0.0, max_hold_hours=0)
    p = pos(trail_pct=D("0.01"), highest=D("2100"), target=D("3000"))
    assert exit_reason(p, D("2078"), T0, cfg) == "trailing_stop"  # 2100 * 0.99 = 2079


def test_time_exit_and_what_is_never_exited():
    cfg = TradingConfig(max_hold_hours=48)
    p = pos()
    assert exit_reason(p, D("2000"), T0 + 48 * H - 1, cfg) is None
    assert exit_reason(p, D("2000"), T0 + 48 * H, cfg) == "time_exit"
    # protective exits first: stop hit after the time limit is still reported as the stop
    assert exit_reason(pos(), D("1900"), T0 + 50 * H, cfg) == "stop_loss"
    # an entry still waiting for its fill, or a position already being closed: nothing to do
    assert exit_reason(pos(amount=D(0)), D("1000"), T0 + 99 * H, cfg) is None
    assert exit_reason(pos(status="closing"), D("1000"), T0 + 99 * H, cfg) is None


def _candle_pos(**kw):
    from core.models import Position

    base = dict(symbol="ETH/USDT", strategy="t", amount=D("1"), entry_price=D("100"), stop=D("97"),
                target=D("106"), opened_ms=0, highest=D("100"))
    base.update(kw)
    return Position(**base)


@pytest.mark.parametrize("candle, expected", [
    ((D("99"), D("101"), D("96.5"), D("100.5")), ("stop_loss", D("97"))),       # wick through the stop
    ((D("95"), D("96"), D("94"), D("95.5")), ("stop_loss", D("95"))),           # gapped below: the open
    ((D("101"), D("107"), D("100"), D("101")), ("take_profit", D("106"))),      # wick to the target
    ((D("108"), D("109"), D("107"), D("108")), ("take_profit", D("108"))),      # gapped above: the open
    ((D("100"), D("107"), D("96"), D("100")), ("stop_loss", D("97"))),          # both touched: the worse
    ((D("100"), D("105"), D("98"), D("99")), None),                             # nothing crossed
])
def test_candle_exit_uses_the_range_not_only_the_close(candle, expected):
    from core.config import TradingConfig
    from core.trading.exits import candle_exit

    assert candle_exit(_candle_pos(), candle, 3_600_000, TradingConfig()) == expected


def test_candle_exit_trail_and_time():
    from core.config import TradingConfig
    from core.trading.exits import candle_exit

    cfg = TradingConfig(trailing_stop_pct=0.02, max_hold_hours=2)
    pos = _candle_pos()
    # the high raises the trail for LATER candles only: 105 * 0.98 = 102.9
    assert candle_exit(pos, (D("100"), D("105"), D("103"), D("104")), 3_600_000, cfg) is None
    assert pos.highest == D("105")
    assert candle_exit(pos, (D("104"), D("104.5"), D("102"), D("103")), 3_600_000, cfg) == \
        ("trailing_stop", D("102.90"))
    later = _candle_pos()
    assert candle_exit(later, (D("100"), D("101"), D("99"), D("100.5")), 2 * 3_600_000, cfg) == \
        ("time_exit", D("100.5"))
