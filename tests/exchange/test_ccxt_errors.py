"""ccxt exceptions -> gateway errors, offline: recorded Binance error bodies through ccxt's own
``handle_errors``, then ``translate``. The class decides what the engine does (retry, skip,
reject, stop), and no message may carry a secret or a query string."""
import json

import pytest

from core.exchange.ccxt_errors import MalformedReply, OrderNotFound, clean_message, translate
from core.exchange.ccxt_client import ccxt_async
from core.exchange.gateway import AuthenticationFailed, GatewayError, OrderRejected, RateLimited, TemporaryError
from tests.support.binance_fixtures import CASSETTES

cx = ccxt_async  # ccxt's exception classes are exported here too

KEY, SECRET = "k3yABCDEF0123456789", "s3cretABCDEF0123456789"


def raised(status: int, body: str, url: str = "https://api.binance.com/api/v3/klines?symbol=X&signature=abc",
           authenticated_before: bool = False):
    """The exception ccxt's binance raises for this HTTP reply."""
    ex = ccxt_async.binance()
    ex.options["hasAlreadyAuthenticatedSuccessfully"] = authenticated_before
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    try:
        ex.handle_errors(status, "", url, "GET", {}, body, parsed, {}, "")
        ex.handle_http_status_code(status, "", url, "GET", body)
    except cx.BaseError as exc:
        return exc
    raise AssertionError("ccxt raised nothing")


def recorded(name: str) -> tuple[int, str]:
    lines = (CASSETTES / name).read_text().splitlines()
    status = next(int(x.split(":")[1]) for x in lines if x.startswith("  status:"))
    body = next(x[len("  body: '"):-1].replace("''", "'") for x in lines if x.startswith("  body: '"))
    return status, body


@pytest.mark.parametrize("cassette", ["klines_bogus_2.yml", "trades_2.yml", "avg_price_bogus.yml"])
def test_recorded_invalid_symbol_is_a_definite_refusal(cassette):
    status, body = recorded(cassette)
    assert status == 400
    err = translate(raised(status, body), "candles BOGUS 1h", status=status)
    assert type(err) is GatewayError and not err.retryable
    assert str(err) == "candles BOGUS 1h: refused by the exchange (code -1121: Invalid symbol.)"
    assert isinstance(translate(raised(status, body), "create order x", status=status, rejects=True), OrderRejected)


def test_rejected_key_is_an_authentication_failure_naming_no_secret():
    body = '{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}'
    exc = raised(401, body)
    exc.args = (f"{exc.args[0]} apiKey={KEY} secret={SECRET}",)  # as if a message quoted them
    err = translate(exc, "balance", status=401, secrets=[KEY, SECRET])
    assert isinstance(err, AuthenticationFailed) and not err.retryable
    assert "code -2015" in str(err) and KEY not in str(err) and SECRET not in str(err)
    assert "BINANCE_API_KEY" in str(err)


def test_rejected_key_after_it_worked_is_still_a_key_refusal_not_a_rate_limit():
    body = '{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}'
    exc = raised(401, body, authenticated_before=True)
    assert isinstance(exc, cx.DDoSProtection)  # ccxt's guess: "a temporary ban"
    err = translate(exc, "open orders", status=401)
    assert isinstance(err, AuthenticationFailed) and "code -2015" in str(err)


def test_rate_limits_and_bans_carry_their_pause():
    err = translate(raised(429, '{"code":-1003,"msg":"Too many requests."}'), "tickers", status=429, retry_after=7)
    assert isinstance(err, RateLimited) and err.retry_after_s == 7 and not err.banned
    err = translate(raised(418, '{"code":-1003,"msg":"Way too many requests; IP banned."}'), "tickers", status=418)
    assert isinstance(err, RateLimited) and err.banned and err.retry_after_s == 120


@pytest.mark.parametrize("exc,status,cls,words", [
    (cx.ExchangeNotAvailable("binance 503 Service Unavailable"), 503, TemporaryError, "HTTP 503"),
    (cx.RequestTimeout("binance GET https://x/api?signature=abc timed out"), None, TemporaryError, "timed out"),
    (cx.NetworkError("connection reset"), None, TemporaryError, "unreachable"),
    (cx.InvalidNonce('{"code":-1021,"msg":"Timestamp for this request is outside of the recvWindow."}'), 400,
     TemporaryError, "timedatectl"),
    (cx.OrderNotFound('{"code":-2013,"msg":"Order does not exist."}'), 400, OrderNotFound, "unknown order"),
    (cx.InsufficientFunds('{"code":-2010,"msg":"Account has insufficient balance."}'), 400, OrderRejected,
     "code -2010: Account has insufficient balance."),
    (KeyError("price"), None, MalformedReply, "malformed reply (KeyError)"),
])
def test_each_ccxt_error_class_maps_to_what_the_engine_does(exc, status, cls, words):
    err = translate(exc, "x", status=status)
    assert type(err) is cls and words in str(err)
    assert "signature" not in str(err)


def test_a_bug_is_not_hidden_as_an_exchange_error():
    with pytest.raises(RuntimeError):
        translate(RuntimeError("bug"), "x")


def test_clean_message_drops_query_strings_and_secrets():
    assert clean_message("GET https://h/api/v3/account?timestamp=1&signature=abcdef failed") == \
        "GET https://h/api/v3/account failed"
    assert clean_message(f"key {KEY} refused", [KEY, ""]) == "key *** refused"
    assert len(clean_message("x" * 500)) == 200
