"""Building the ccxt client, offline: endpoints redirected, ccxt's own throttling off, bad ids refused."""
import asyncio

import pytest

from core.config import config_from_dict
from core.exchange.ccxt_client import build_exchange
from core.secrets import Secrets

KEYS = Secrets("emu-key-0001", "emu-secret-0001")


def test_build_exchange_redirects_every_endpoint_and_disables_ccxt_throttling():
    cfg = config_from_dict({"exchange": {"api_url": "http://127.0.0.1:9/proxy", "timeout_s": 3}})
    ex = build_exchange(cfg, KEYS)
    try:
        assert ex.enableRateLimit is False and ex.timeout == 3000
        assert ex.options["fetchMarkets"]["types"] == ["spot"] and ex.options["fetchCurrencies"] is False
        assert all(u.startswith("http://127.0.0.1:9/proxy/") for u in ex.urls["api"].values())
        assert ex.urls["api"]["public"] == "http://127.0.0.1:9/proxy/api/v3"
        assert ex.urls["api"]["sapi"] == "http://127.0.0.1:9/proxy/sapi/v1"
    finally:
        asyncio.run(ex.close())
    ex = build_exchange(config_from_dict({"exchange": {"testnet": True}}), Secrets())
    try:
        assert "testnet.binance.vision" in ex.urls["api"]["public"]
    finally:
        asyncio.run(ex.close())


def test_unknown_exchange_id_is_a_config_error():
    from core.config import ConfigError

    with pytest.raises(ConfigError, match="exchange.id"):
        build_exchange(config_from_dict({"exchange": {"id": "nosuchexchange"}}), Secrets())
