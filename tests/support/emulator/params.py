"""Order vocabulary and request-parameter parsing shared by the account, triggers and order lists."""
from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

from tests.support.emulator.rules import ApiError

ZERO = Decimal(0)
Q8 = Decimal("0.00000001")
OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")
ORDER_TYPES = ("LIMIT", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT", "LIMIT_MAKER")
STOP_TYPES = ("STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT")  # Binance's "algo" orders
PRICED_TYPES = ("LIMIT", "LIMIT_MAKER", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT")
TIF_TYPES = ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT")
_NUMBER = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")


def q8(x: Decimal) -> Decimal:
    return x.quantize(Q8, rounding=ROUND_HALF_UP)


def mandatory(name: str) -> ApiError:
    return ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def not_required(name: str) -> ApiError:
    return ApiError(-1106, f"Parameter '{name}' sent when not required.")


def parse_decimal(params: dict[str, str], name: str, required: bool = False) -> Decimal | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise mandatory(name)
        return None
    if not _NUMBER.match(raw):
        raise ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is "
                              f"'^([0-9]{{1,20}})(\\.[0-9]{{1,20}})?$'.")
    return Decimal(raw)


def parse_int(params: dict[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 20:
        raise ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
    return int(raw)
