"""ccxt exceptions -> ``core.exchange.gateway`` errors, with messages safe to log.

Kept apart from the gateway so the mapping is testable with real recorded Binance error bodies
and no server: what the engine does (retry, skip, reject, stop) depends only on the class
returned here. Messages are built by us and never carry keys, signatures or query strings.
"""
from __future__ import annotations

import re
from typing import Iterable

from core.exchange.ccxt_lean import async_support

async_support()  # before any ccxt import: a plain one would load all ~100 exchanges
from ccxt.base import errors as cx  # noqa: E402

from core.exchange.gateway import (AuthenticationFailed, GatewayError, OrderRejected, RateLimited,  # noqa: E402
                                   TemporaryError)

_BINANCE_ERROR = re.compile(r'"code"\s*:\s*(-?\d+)\s*,\s*"msg"\s*:\s*"([^"]{0,160})')
_QUERY = re.compile(r"\?\S*")


class OrderNotFound(GatewayError):
    """The exchange does not know the order (by our client id)."""


class MalformedReply(TemporaryError):
    """A reply that cannot be trusted (truncated, wrong shape, inconsistent): retried, then skipped."""


def clean_message(text: str, secrets: Iterable[str] = ()) -> str:
    """An exchange/ccxt message made safe to log: Binance's ``code: msg`` when there is one, no
    query strings (they carry signatures), no secrets, at most 200 characters."""
    m = _BINANCE_ERROR.search(text)
    text = f"code {m.group(1)}: {m.group(2)}" if m else _QUERY.sub("", text)
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text[:200]


def translate(exc: BaseException, what: str, *, status: int | None = None, retry_after: float | None = None,
              rejects: bool = False, secrets: Iterable[str] = ()) -> GatewayError:
    """The gateway error for ``exc`` raised by ccxt while doing ``what``.

    ``status`` and ``retry_after`` are what the transport saw for this request (ccxt does not keep
    them per request); ``rejects``: a refusal of this request is an order rejection (create
    order) rather than a plain error. A programming error that is no reply problem is re-raised.
    """
    secrets = tuple(secrets)
    if status == 401 or isinstance(exc, cx.AuthenticationError) and status not in (418, 429):
        # ccxt turns Binance's -2015 into DDoSProtection once the key has worked ("a temporary
        # ban"); it is a refusal of the key either way, and HTTP 401 says so. Whether it is for
        # good is the gateway's call (how long it lasts), not a rate-limit pause.
        return AuthenticationFailed(
            f"{what}: the exchange refused the API key or signature ({clean_message(str(exc), secrets)}); check "
            "BINANCE_API_KEY / BINANCE_API_SECRET, the key's IP whitelist and permissions")
    if isinstance(exc, (cx.DDoSProtection, cx.RateLimitExceeded)) or status in (418, 429):
        banned = status == 418
        retry = retry_after if retry_after is not None else (120.0 if banned else 10.0)
        why = "the exchange banned this IP for too many requests (HTTP 418)" if banned else \
            f"the exchange says too many requests (HTTP {status or 429})"
        return RateLimited(f"{what}: {why}; retry after {retry:.0f} s", retry, banned)
    if isinstance(status, int) and status >= 500:
        return TemporaryError(f"{what}: exchange error (HTTP {status})")
    if isinstance(exc, cx.InvalidNonce):
        return TemporaryError(f"{what}: the exchange rejected our timestamp even after re-syncing the clock "
                              f"({clean_message(str(exc), secrets)}); check the system clock (timedatectl)")
    if isinstance(exc, cx.OrderNotFound):
        return OrderNotFound(f"{what}: unknown order")
    if isinstance(exc, (cx.InsufficientFunds, cx.InvalidOrder)):
        return OrderRejected(f"{what}: rejected by the exchange ({clean_message(str(exc), secrets)})")
    if isinstance(exc, cx.RequestTimeout):
        return TemporaryError(f"{what}: timed out")
    if isinstance(exc, (cx.NetworkError, cx.OperationFailed)):
        return TemporaryError(f"{what}: exchange unreachable or failing ({type(exc).__name__})")
    if isinstance(exc, cx.BaseError):
        msg = f"{what}: refused by the exchange ({clean_message(str(exc), secrets)})"
        return OrderRejected(msg) if rejects else GatewayError(msg)
    if isinstance(exc, (TypeError, KeyError, ValueError, AttributeError, IndexError, ArithmeticError)):
        return MalformedReply(f"{what}: malformed reply ({type(exc).__name__})")
    raise exc
