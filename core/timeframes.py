"""Candle periods and time units in milliseconds: one definition for every layer."""
from __future__ import annotations

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS  # for annualising: crypto trades every day of the year

TIMEFRAME_MS = {"1m": MINUTE_MS, "5m": 5 * MINUTE_MS, "15m": 15 * MINUTE_MS, "1h": HOUR_MS, "4h": 4 * HOUR_MS,
                "1d": DAY_MS}


def timeframe_ms(tf: str) -> int:
    """Period of a timeframe name; a clear error for a name we do not know."""
    try:
        return TIMEFRAME_MS[tf]
    except KeyError:
        raise ValueError(f"unknown timeframe {tf!r} (expected one of {', '.join(TIMEFRAME_MS)})") from None
