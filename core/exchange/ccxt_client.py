"""The configured ccxt client: spot markets only, ccxt's throttling off, api_url / sandbox applied.

Importing this module loads ccxt lean (``core.exchange.ccxt_lean``): only the exchange in use
is imported, not all ~100 of them.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from core.exchange.ccxt_lean import async_support

ccxt_async = async_support()  # before the imports below: they would load all ~100 exchanges
from ccxt.base import errors as cx  # noqa: E402

from core.config import Config, ConfigError  # noqa: E402
from core.secrets import Secrets  # noqa: E402


def _rewrite_urls(api: Any, base: str) -> Any:
    """Point every REST endpoint at ``base`` (scheme + host [+ prefix]), keeping each path."""
    if isinstance(api, str):
        return base.rstrip("/") + urlsplit(api).path
    if isinstance(api, dict):
        return {k: _rewrite_urls(v, base) for k, v in api.items()}
    return api


def build_exchange(cfg: Config, secrets: Secrets):
    """The configured ccxt client: own rate limiting, spot markets only, api_url / sandbox applied."""
    x = cfg.exchange
    klass = getattr(ccxt_async, x.id, None)
    if not isinstance(klass, type) or x.id not in ccxt_async.exchanges:
        raise ConfigError(cfg.source, "exchange.id", f"expected a ccxt exchange id such as \"binance\", got {x.id!r}")
    options: dict[str, Any] = {
        # Binance with keys: load_markets would also call signed sapi endpoints (coin config, margin
        # pairs), costing weight and failing on keys without those permissions; spot needs neither.
        "fetchCurrencies": False,
        "fetchMargins": False,
        "warnOnFetchOpenOrdersWithoutSymbol": False,
    }
    if x.id == "binance" or x.api_url:
        options["fetchMarkets"] = {"types": ["spot"]}  # exchangeInfo only: no futures/options listings
    params: dict[str, Any] = {"enableRateLimit": False, "timeout": int(x.timeout_s * 1000), "options": options}
    if secrets.has_keys:
        params["apiKey"], params["secret"] = secrets.api_key, secrets.api_secret
    ex = klass(params)
    ex.enableLastHttpResponse = False  # would keep the last body (MBs of exchangeInfo) alive
    ex.enableLastResponseHeaders = False
    ex.enableLastJsonResponse = False  # likewise the last parsed reply (markets: ~MBs)
    if x.testnet or secrets.testnet:
        try:
            ex.set_sandbox_mode(True)
        except cx.NotSupported:
            raise ConfigError(cfg.source, "exchange.testnet", f"expected false: ccxt has no sandbox for {x.id}") from None
    if x.api_url:
        ex.urls["api"] = _rewrite_urls(ex.urls["api"], x.api_url)
    return ex
