"""Building the engine's surroundings: gateway + clock for live or recorded data, state paths."""
from __future__ import annotations

from pathlib import Path

from core.clock import VirtualClock, WallClock
from core.config import Config
from core.secrets import Secrets
from core.timeframes import timeframe_ms
from core.exchange.replay import ReplayGateway

# Candles of history a replay starts with: enough for the slowest indicator on the
# confirmation timeframe (4h EMA50 = 200 1h candles) with margin.
REPLAY_WARMUP_CANDLES = 300


def replay_setup(cfg: Config, data_dir: str | Path, warmup: int = REPLAY_WARMUP_CANDLES,
                 symbols: list[str] | None = None) -> tuple[ReplayGateway, VirtualClock, int]:
    """A replay gateway on a virtual clock placed ``warmup`` candles in; returns (gateway, clock, end_ms)."""
    clock = VirtualClock(0)
    gw = ReplayGateway(data_dir, clock, timeframe=cfg.scanner.timeframes[0], symbols=symbols)
    tf_ms = timeframe_ms(gw.base_timeframe)
    clock.advance_to(gw.start_ms + warmup * tf_ms)
    return gw, clock, gw.end_ms


def live_setup(cfg: Config, secrets: Secrets):
    """The ccxt gateway on the wall clock (imported lazily: ccxt is heavy)."""
    from core.exchange.ccxt_gateway import CcxtGateway

    clock = WallClock()
    return CcxtGateway(cfg, secrets, clock), clock
