"""UTC times and holding periods for the tax ledger: exact epoch-ms conversions, calendar arithmetic.

Calendar, not 24 h spans: a period of months or years keeps the day of the month and is clamped to
the month's last day (Feb 29 + 1y = Feb 28), as BGB §188(3) counts and most tax tools do.
"""
from __future__ import annotations

import calendar
import re
import time
from datetime import date, datetime, timedelta, timezone

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
EPOCH_DAY = date(1970, 1, 1)
_PERIOD = re.compile(r"^([1-9]\d*)([ymd])$")


def utc(ts_ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ts_ms)


def iso(ts_ms: int) -> str:
    """ISO-8601 UTC to the second, e.g. 2024-02-01T00:00:00Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts_ms // 1000))


def to_ms(dt: datetime) -> int:
    """Exact epoch ms of an aware datetime (no float on the way)."""
    return (dt - EPOCH) // timedelta(milliseconds=1)


def ms_from_iso(text: str) -> int:
    """Epoch ms of an ISO-8601 time; without an offset it is taken as UTC. ``ValueError`` if bad."""
    dt = datetime.fromisoformat(text.strip())
    return to_ms(dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc))


def parse_period(text: str) -> tuple[int, str]:
    m = _PERIOD.match(text or "")
    if not m:
        raise ValueError(f"long_term_after: expected a period like 1y, 18m or 400d, got {text!r}")
    return int(m.group(1)), m.group(2)


def add_period(d: date, period: str) -> date:
    """Calendar arithmetic: months/years keep the day of month, clamped to the month's end."""
    n, unit = parse_period(period)
    if unit == "d":
        return d + timedelta(days=n)
    months = d.month - 1 + (n * 12 if unit == "y" else n)
    year, month = d.year + months // 12, months % 12 + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))
