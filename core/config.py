"""Configuration: config.json into typed, frozen dataclasses (one per section).

Field helpers and validation live in ``core.fields`` (shared with strategy plugins); secrets
in ``core.secrets``. Values valid alone but not together are checked here.
"""
from __future__ import annotations

import json
import os
import re
import types
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from core.fields import MAX_DIGITS, BigNumber, ConfigError, build_section, opt, show  # noqa: F401
from core.events import KINDS, LEVELS
from core.timeframes import TIMEFRAME_MS

# --- sections -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExchangeConfig:
    id: str = opt("binance", "ccxt exchange id (public data works for any; trading is tested on binance)",
                  pattern=r"^[a-z0-9_]+$")
    api_url: str | None = opt(None, "replace the exchange's REST base URL (testnets, proxies, the local emulator); "
                                    "no user:password@ in it (it is shown in logs)",
                              pattern=r"^https?://[^\s/@]+(/[^\s@]*)?$")
    testnet: bool = opt(False, "use the exchange's sandbox (also set by BINANCE_TESTNET in the env file)")
    timeout_s: float = opt(10.0, "timeout of every HTTP request, seconds", min=1, max=120)
    max_concurrency: int = opt(16, "requests in flight at once (the weight budget, not this, keeps us polite)",
                               min=1, max=64)
    weight_budget_pct: float = opt(0.5, "share of the exchange's request-weight limit we allow ourselves",
                                   gt=0, max=0.95)
    markets_refresh_s: int = opt(3600, "reload markets (precision, limits) this often, seconds", min=60, max=86400)


@dataclass(frozen=True)
class UniverseConfig:
    quote: str = opt("USDT", "quote currency of the traded pairs", pattern=r"^[A-Z0-9]{2,10}$")
    max_pairs: int = opt(150, "scan at most this many pairs, by 24 h quote volume", min=1, max=1000)
    min_quote_volume: float = opt(1_000_000.0, "minimum 24 h volume in the quote currency", min=0)
    min_price: float = opt(0.0, "minimum last price", min=0)
    max_spread_pct: float = opt(0.005, "maximum bid/ask spread as a fraction of the price", gt=0, max=1)
    include: list = opt([], "glob patterns always included when listed on the exchange (e.g. \"BTC/*\")")
    exclude: list = opt([], "glob patterns never traded (e.g. \"*DOWN/*\")")
    refresh_s: int = opt(3600, "re-rank the universe this often, seconds", min=60, max=7 * 86400)


@dataclass(frozen=True)
class ScannerConfig:
    interval_s: float = opt(10.0, "seconds between scan cycles", min=1, max=3600)
    timeframes: list = opt(["1h", "4h"], "candle timeframes; the first is the signal timeframe",
                           item_choices=tuple(TIMEFRAME_MS))
    candles: int = opt(500, "candles kept per pair and timeframe", min=60, max=5000)
    min_opportunity_score: float = opt(0.6, "minimum combined score as a fraction of 100", min=0, max=1)
    confirm_timeframe: str | None = opt("4h", "higher timeframe that must agree with a signal (null: off)",
                                        choices=tuple(TIMEFRAME_MS))
    quarantine_gap_candles: int = opt(24, "a data gap longer than this many candles quarantines the pair",
                                      min=1, max=10_000)
    quarantine_jump_ratio: float = opt(3.0, "a close-to-close move beyond this factor quarantines the pair",
                                       gt=1, max=1000)


@dataclass(frozen=True)
class StrategiesConfig:
    enabled: list = opt(["mean_reversion", "trend_following"], "strategy plugins to run, by name (momentum "
                        "ships disabled: too few trades to show an edge; see README Strategies)",
                        min_items=1, min_items_why="expected at least one strategy (with none, nothing is ever traded)")
    weights: dict = opt({}, "ranking weight per strategy name (default 1.0)")
    params: dict = opt({}, "per-strategy parameters: {name: {param: value}}, validated by each plugin")


@dataclass(frozen=True)
class TradingConfig:
    position_size_pct: float = opt(0.10, "largest position as a fraction of equity", gt=0, max=1)
    order_type: str = opt("market", "entry order type", choices=("market", "limit"))
    entry_timeout_s: int = opt(60, "cancel an unfilled entry order after this many seconds", min=5, max=86400)
    stop_loss_pct: float = opt(0.03, "widest stop allowed, as a fraction below entry", gt=0, max=0.5)
    take_profit_pct: float = opt(0.06, "target when a strategy gives none, as a fraction above entry",
                                 gt=0, max=10)
    trailing_stop_pct: float = opt(0.0, "trailing stop distance from the high since entry (0: off), for positions "
                                   "whose strategy sets none (each shipped strategy sets its own)", min=0, max=0.5)
    max_hold_hours: float = opt(48.0, "exit a position after this many hours (0: never), for positions whose "
                                "strategy sets none (each shipped strategy sets its own)", min=0, max=24 * 365)
    monitor_interval_s: float = opt(3.0, "seconds between exit checks of open positions", min=0.5, max=600)
    exchange_stops: str = opt("oco", "live: protective exit resting on the exchange after each entry: oco (take-profit "
                              "+ stop-limit), stop (stop-limit only) or off", choices=("oco", "stop", "off"))
    stop_limit_offset_pct: float = opt(0.005, "limit price of an exchange stop-limit this fraction below its stop",
                                       gt=0, max=0.2)
    trail_update_s: float = opt(60.0, "move a trailing exchange stop at most this often, seconds", min=1, max=86400)


@dataclass(frozen=True)
class RiskConfig:
    risk_per_trade_pct: float = opt(0.01, "equity lost if a stop is hit: size = risk / stop distance",
                                    gt=0, max=0.2)
    max_open_positions: int = opt(5, "open positions at most", min=1, max=100)
    max_daily_loss_pct: float = opt(0.03, "halt new entries for the UTC day after losing this fraction",
                                    gt=0, max=1)
    max_drawdown_pct: float = opt(0.15, "below this drawdown from the equity peak: close every position and "
                                        "halt entries until `status --resume`",
                                  gt=0, max=1)
    drawdown_cooloff_hours: float = opt(72.0, "after a drawdown halt, resume by itself after this many hours "
                                               "(0: only `status --resume`; never after a second halt before the "
                                               "old peak is back)", min=0, max=24 * 365)
    drawdown_resume_size: float = opt(0.5, "after a drawdown halt, risk per trade and the drawdown limit are "
                                           "scaled by this until the equity is back at the peak before the halt",
                                      gt=0, max=1)
    cooldown_minutes: float = opt(60.0, "no re-entry on a pair this long after an exit", min=0, max=7 * 1440)
    max_asset_exposure_pct: float = opt(0.25, "at most this fraction of equity in one base asset",
                                        gt=0, max=1)
    max_spread_pct: float = opt(0.003, "refuse an entry when the book's spread is wider", gt=0, max=1)
    max_slippage_pct: float = opt(0.005, "refuse an entry when walking the book costs more", gt=0, max=1)
    min_depth_multiple: float = opt(3.0, "book depth within the slippage limit must cover the order this often",
                                    min=1, max=1000)


@dataclass(frozen=True)
class PaperConfig:
    starting_balance: Decimal = opt(Decimal("1000"), "simulated quote balance in paper mode", gt=0)
    fee_pct: Decimal = opt(Decimal("0.001"), "simulated taker fee as a fraction of cost", min=0, max=0.05)
    slippage_pct: Decimal = opt(Decimal("0.0005"), "simulated slippage as a fraction of price", min=0, max=0.05)
    # 0.1 %: Binance's best bid/ask for its USDT pairs with >= 1M USDT a day (recorded 2019-06-30) had a
    # median spread of 0.17 % (top 10 by volume 0.05 %); 2021's volumes were several times larger.
    spread_pct: Decimal = opt(Decimal("0.001"), "bid/ask spread assumed where there is no order book (backtest, "
                              "replay), as a fraction of price; each such fill pays half of it", min=0, max=0.05)


@dataclass(frozen=True)
class TaxConfig:
    method: str = opt("fifo", "lot matching method", choices=("fifo", "lifo", "hifo"))
    jurisdiction: str = opt("us", "holding-period rules: us (short/long), de (taxable/tax-free), none",
                            choices=("us", "de", "none"))
    long_term_after: str = opt("1y", "holding period, calendar based: e.g. 1y, 18m, 400d", pattern=r"^[1-9]\d*[ymd]$")
    currency: str = opt("USD", "reporting currency label (the quote currency is treated as this)",
                        pattern=r"^[A-Z]{3,5}$")


@dataclass(frozen=True)
class HealthConfig:
    interval_s: int = opt(300, "log a health line this often, seconds", min=10, max=86400)
    temp_soft_c: float = opt(75.0, "CPU temperature that slows the scan interval", min=30, max=110)
    temp_hard_c: float = opt(82.0, "CPU temperature that pauses new entries", min=30, max=110)
    mem_soft_mb: int = opt(200, "available memory that slows the scan interval, MiB", min=0, max=1 << 20)
    mem_hard_mb: int = opt(100, "available memory that pauses new entries, MiB", min=0, max=1 << 20)
    disk_soft_mb: int = opt(500, "free disk (state directory) that slows the scan interval, MiB", min=0,
                            max=1 << 30)
    disk_hard_mb: int = opt(100, "free disk that pauses new entries, MiB", min=0, max=1 << 30)


@dataclass(frozen=True)
class StoreConfig:
    backups_keep: int = opt(7, "state database backups kept (STATE/backups; also as many pre-migration copies)",
                            min=1, max=365)
    backup_every_h: float = opt(24.0, "hours between online backups of the state database while running",
                                min=1, max=24 * 30)


@dataclass(frozen=True)
class LoggingConfig:
    level: str = opt("INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    audit_max_kb: int = opt(1024, "size of the rotating order/fill audit log, KiB", min=16, max=1 << 20)
    audit_backups: int = opt(5, "rotated audit log files kept", min=1, max=100)


@dataclass(frozen=True)
class TelegramConfig:
    enabled: bool = opt(False, "send notifications to Telegram (bot token: TELEGRAM_BOT_TOKEN in the env file)")
    chat_ids: list = opt([], "chat ids that receive messages and may give commands (strings, e.g. \"123456789\")")
    api_url: str | None = opt(None, "Bot API base URL (null: https://api.telegram.org; proxies, the test fake)",
                              pattern=r"https?://[^\s@]+")
    events: list = opt([], "event kinds to send (empty: all)", item_choices=tuple(KINDS))
    min_level: str = opt("info", "lowest level sent", choices=LEVELS)
    commands: bool = opt(True, "answer /status, /pause, /close ... from the allow-listed chats")


@dataclass(frozen=True)
class WebhookConfig:
    enabled: bool = opt(False, "POST notifications to NOTIFY_WEBHOOK_URL (set in the env file: it holds a token)")
    format: str = opt("json", "body: json (pitrader's schema), discord or ntfy", choices=("json", "discord", "ntfy"))
    events: list = opt([], "event kinds to send (empty: all)", item_choices=tuple(KINDS))
    min_level: str = opt("info", "lowest level sent", choices=LEVELS)


@dataclass(frozen=True)
class NotifyConfig:
    telegram: TelegramConfig = field(default_factory=TelegramConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    daily_summary_hour: int = opt(20, "UTC hour of the daily summary (-1: none)", min=-1, max=23)
    unreachable_minutes: int = opt(10, "tell after the exchange has been unreachable this long, minutes",
                                   min=1, max=1440)
    timeout_s: float = opt(10.0, "timeout of one delivery, seconds", gt=0, max=120)


@dataclass(frozen=True)
class Config:
    mode: str = opt("paper", "paper (simulated orders, default) or live (real orders)", choices=("paper", "live"))
    exchange: ExchangeConfig = field(default_factory=ExchangeConfig)
    universe: UniverseConfig = field(default_factory=UniverseConfig)
    scanner: ScannerConfig = field(default_factory=ScannerConfig)
    strategies: StrategiesConfig = field(default_factory=StrategiesConfig)
    trading: TradingConfig = field(default_factory=TradingConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)
    paper: PaperConfig = field(default_factory=PaperConfig)
    tax: TaxConfig = field(default_factory=TaxConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    source: str = field(default="<defaults>", compare=False, metadata={"internal": True})

    def exits(self, strategy: str) -> TradingConfig:
        """``trading`` as it applies to ``strategy``'s positions: the strategy's own ``max_hold_hours``
        and ``trailing_stop_pct`` (``strategies.params.<name>``, defaults in the plugin) where it sets
        them, else ``trading.*`` (manual and rebuilt positions, plugins without them). Cached: exit
        checks ask for it every few seconds per position."""
        cache = self.__dict__.setdefault("_exits", {})  # not a field: equality and replace() ignore it
        if strategy not in cache:
            cache[strategy] = replace(self.trading, **_own_exits(self.strategies, strategy, self.source))
        return cache[strategy]


EXIT_KEYS = ("max_hold_hours", "trailing_stop_pct")


def _own_exits(section: StrategiesConfig, name: str, file: str) -> dict[str, float]:
    from strategies import registry

    if name not in registry.available():
        return {}
    try:
        params = registry.params_of(section, name, file)
    except Exception:  # noqa: BLE001 -- a plugin nobody configured failed to load: its positions use trading.*
        return {}
    return {k: getattr(params, k) for k in EXIT_KEYS if getattr(params, k, None) is not None}


def _cross_checks(cfg: Config, file: str) -> None:
    """Values that are valid alone but not together."""
    t, r, h = cfg.trading, cfg.risk, cfg.health
    if t.stop_loss_pct >= t.take_profit_pct:
        raise ConfigError(file, "trading.stop_loss_pct",
                          f"expected less than trading.take_profit_pct ({t.take_profit_pct}), got {t.stop_loss_pct}")
    if t.trailing_stop_pct and t.trailing_stop_pct > t.stop_loss_pct * 3:
        raise ConfigError(file, "trading.trailing_stop_pct",
                          f"expected at most 3x trading.stop_loss_pct ({t.stop_loss_pct * 3:g}), got {t.trailing_stop_pct}")
    if r.max_daily_loss_pct > r.max_drawdown_pct:
        raise ConfigError(file, "risk.max_daily_loss_pct",
                          f"expected at most risk.max_drawdown_pct ({r.max_drawdown_pct}), got {r.max_daily_loss_pct}")
    if r.max_asset_exposure_pct < t.position_size_pct:
        raise ConfigError(file, "risk.max_asset_exposure_pct",
                          f"expected at least trading.position_size_pct ({t.position_size_pct}), "
                          f"got {r.max_asset_exposure_pct}")
    for soft, hard, unit in (("temp_soft_c", "temp_hard_c", ">"), ("mem_soft_mb", "mem_hard_mb", "<"),
                             ("disk_soft_mb", "disk_hard_mb", "<")):
        s, hv = getattr(h, soft), getattr(h, hard)
        if (unit == ">" and s > hv) or (unit == "<" and s < hv):
            raise ConfigError(file, f"health.{soft}",
                              f"expected {'at most' if unit == '>' else 'at least'} health.{hard} ({hv}), got {s}")
    tfs = cfg.scanner.timeframes
    if not tfs:
        raise ConfigError(file, "scanner.timeframes", "expected at least one timeframe")
    if len(set(tfs)) != len(tfs):
        raise ConfigError(file, "scanner.timeframes", f"expected no duplicates, got {show(list(tfs))}")
    ctf = cfg.scanner.confirm_timeframe
    if ctf is not None and (ctf not in tfs or TIMEFRAME_MS[ctf] <= TIMEFRAME_MS[tfs[0]]):
        raise ConfigError(file, "scanner.confirm_timeframe",
                          f"expected null or a timeframe from scanner.timeframes longer than {tfs[0]}, got {show(ctf)}")
    tg = cfg.notify.telegram
    for i, chat in enumerate(tg.chat_ids):
        if not re.fullmatch(r"-?\d{1,20}", chat):
            raise ConfigError(file, f"notify.telegram.chat_ids[{i}]", f"expected a numeric chat id such as \"123456789\", got {show(chat)}")
    if tg.enabled and not tg.chat_ids:
        raise ConfigError(file, "notify.telegram.chat_ids", "expected at least one chat id when notify.telegram.enabled is true "
                          "(see README: Notifications)")
    for name, w in cfg.strategies.weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w <= 100:
            raise ConfigError(file, f"strategies.weights.{name}", f"expected a number from 0 to 100, got {show(w)}")


def _check_strategies(cfg: Config, file: str) -> None:
    # Imported here so plain config checks do not pay for the plugins unless strategies are configured.
    from strategies import registry

    registry.check_config(cfg.strategies, file)


def config_from_dict(data: Any, file: str = "<dict>") -> Config:
    cfg = build_section(Config, data, file, "")
    _cross_checks(cfg, file)
    _check_strategies(cfg, file)
    return replace(cfg, source=file)


MAX_CONFIG_BYTES = 1 << 20  # the default config is ~3 KB; a bigger file is a mistake, not a setting
MAX_NESTING = 20  # config.json is at most 4 levels deep (strategies.params.<name>.<param>)


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook: a key given twice is a mistake (json.loads silently keeps the last)."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Duplicate(k)
        out[k] = v
    return out


def _number(text: str, conv: Any) -> Any:
    return BigNumber(text) if len(text) > MAX_DIGITS + 10 else conv(text)


def _nesting(text: str) -> int:
    """Deepest bracket nesting outside strings (checked before json.loads, which recurses)."""
    depth = deepest = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_NESTING:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def load_config(path: str | os.PathLike) -> Config:
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(path, "(file)", f"expected at most {MAX_CONFIG_BYTES // 1024} KiB, got a larger file")
        text = raw.decode("utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(path, "(file)", "not found; pass --config PATH or set PITRADER_CONFIG") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "(file)", f"cannot be read: {exc.__class__.__name__}") from None
    if _nesting(text) > MAX_NESTING:
        raise ConfigError(path, "(file)", f"expected objects nested at most {MAX_NESTING} levels deep")
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates,
                          parse_int=lambda t: _number(t, int), parse_float=lambda t: _number(t, float))
    except json.JSONDecodeError as exc:
        raise ConfigError(path, f"line {exc.lineno} column {exc.colno}", f"expected valid JSON ({exc.msg})") from None
    except _Duplicate as exc:
        raise ConfigError(path, str(exc), "key given twice in the same object (json keeps only the last; "
                                          "remove one)") from None
    except (ValueError, RecursionError) as exc:
        raise ConfigError(path, "(file)", f"expected valid JSON ({exc.__class__.__name__})") from None
    return config_from_dict(data, str(path))


def default_config_path() -> Path:
    """--config default: $PITRADER_CONFIG, then /etc/pitrader/config.json, then ./config.json."""
    env = os.environ.get("PITRADER_CONFIG")
    if env:
        return Path(env)
    etc = Path("/etc/pitrader/config.json")
    return etc if etc.exists() else Path("config.json")


def to_dict(obj: Any) -> Any:
    """Plain JSON-able form of a config (what `config check` prints)."""
    if is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj) if not f.metadata.get("internal")}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, (dict, types.MappingProxyType)):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Decimal):
        return float(obj) if obj == obj.to_integral_value() or len(str(obj)) < 16 else str(obj)
    return obj


def reference() -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every key: the README's configuration reference."""
    rows: list[tuple[str, str, str]] = []

    def walk(cls: type, prefix: str) -> None:
        for f in fields(cls):
            if f.metadata.get("internal"):
                continue
            key = f"{prefix}{f.name}"
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            if is_dataclass(default):
                walk(type(default), key + ".")
            else:
                rows.append((key, json.dumps(to_dict(default)), f.metadata.get("help", "")))

    walk(Config, "")
    return rows
