"""Choosing the executor: here, not in executor.py, so the base never imports its subclasses."""
from __future__ import annotations

from core.clock import Clock
from core.config import Config
from core.exchange.gateway import ExchangeGateway
from core.store.state import Store
from core.trading.executor import Executor
from core.trading.live import LiveExecutor
from core.trading.paper import PaperExecutor


def make_executor(cfg: Config, store: Store, gateway: ExchangeGateway, clock: Clock) -> Executor:
    """Paper (the default) or live; the config layer already refused live without keys."""
    cls = LiveExecutor if cfg.mode == "live" else PaperExecutor
    return cls(cfg, store, gateway, clock)
