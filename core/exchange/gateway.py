"""The exchange interface the engine talks to; ccxt (live) and replay both implement it."""
from __future__ import annotations

from decimal import Decimal
from typing import Protocol

import numpy as np

from core.models import Fill, Market, Order, OrderBook, Ticker



class GatewayError(Exception):
    """Base for gateway failures; ``retryable`` says whether trying again can help."""

    retryable = False


class TemporaryError(GatewayError):
    """Network trouble, 5xx, timeouts, rate limits: try again later."""

    retryable = True


class RateLimited(TemporaryError):
    """The exchange said 429/418 (``local`` False), or we refused to send during its pause (``local``
    True: nothing reached the exchange, and the pause is already known)."""

    def __init__(self, message: str, retry_after_s: float = 60.0, banned: bool = False, *,
                 local: bool = False) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.banned = banned
        self.local = local


class OrderRejected(GatewayError):
    """The exchange refused the order (insufficient balance, filters): never retry as is."""


class AuthenticationFailed(GatewayError):
    """The exchange refused our key or signature: a configuration problem, never retried; the
    message names no secret."""


class NotSupported(GatewayError):
    """This gateway cannot do that (e.g. order books in replay)."""


class ExchangeGateway(Protocol):
    """Everything the engine needs from an exchange. All amounts Decimal, times UTC ms.

    OHLCV arrays are float64 with columns ``[ts_ms, open, high, low, close, volume]``,
    ``ts_ms`` being the candle's open time; only *closed* candles are returned.
    """

    async def load_markets(self, reload: bool = False) -> dict[str, Market]: ...

    async def fetch_tickers(self, symbols: list[str] | None = None) -> dict[str, Ticker]: ...

    async def fetch_ohlcv(self, symbol: str, timeframe: str, since_ms: int | None = None,
                          limit: int | None = None) -> np.ndarray: ...

    async def fetch_order_book(self, symbol: str, limit: int = 20) -> OrderBook: ...

    async def fetch_balance(self) -> dict[str, Decimal]:
        """Free balance per asset."""
        ...

    async def create_order(self, order: Order) -> Order:
        """Send ``order`` (client id already set and persisted); returns it updated."""
        ...

    async def cancel_order(self, order: Order) -> Order: ...

    async def fetch_order(self, order: Order) -> Order | None:
        """Look an order up by its client id; None if the exchange never saw it."""
        ...

    async def fetch_open_orders(self, symbol: str | None = None) -> list[Order]: ...

    async def fetch_my_trades(self, symbol: str, since_ms: int | None = None) -> list[Fill]: ...

    async def fetch_time(self) -> int: ...

    async def close(self) -> None: ...

