"""Choosing the executor: here, not in executor.py, so the base never imports its subclasses.

The live executor is imported only when chosen: it pulls in ccxt (its exchange-side protection
uses ccxt's order lists), ~50 MiB that a backtest or a paper account never needs."""
from __future__ import annotations

from core.clock import Clock
from core.config import Config
from core.exchange.gateway import ExchangeGateway
from core.store.state import Store
from core.trading.executor import Executor
from core.trading.paper import PaperExecutor


def make_executor(cfg: Config, store: Store, gateway: ExchangeGateway, clock: Clock) -> Executor:
    """Paper (the default) or live; the config layer already refused live without keys."""
    if cfg.mode == "live":
        from core.trading.live import LiveExecutor

        return LiveExecutor(cfg, store, gateway, clock)
    return PaperExecutor(cfg, store, gateway, clock)
