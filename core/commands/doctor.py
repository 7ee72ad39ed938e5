"""`pitrader doctor`: is this installation able to trade? One verdict per check.

Checks, in order: state directory and numba cache (writable), configuration, connectivity, server time offset, markets, universe, API keys
(a signed account request, only when keys are set), rate-limit headroom (last, so it includes
the doctor's own requests), notification channels (without sending a message). Exit 0 when every check is ok or warn, 1 when any fails; a bad
config or env file exits 78 before anything is sent. Secrets are never printed: keys are
reported as set or not, and every exchange message is sanitised by the gateway.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from rich.table import Table

NAME = "doctor"
HELP = "check configuration, API keys, exchange connectivity, clock offset and rate-limit headroom"

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
CLOCK_WARN_MS = 1_000  # Binance refuses signed requests more than 1 s ahead of its clock
CLOCK_FAIL_MS = 60_000  # a minute off: candle timing and every log line are wrong


@dataclass(frozen=True)
class Check:
    check: str
    verdict: str
    detail: str


def configure(p) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


async def diagnose(cfg, secrets, gateway=None, clock=None) -> list[Check]:
    """Run every check against the configured exchange (``gateway`` injectable for tests)."""
    from core.clock import WallClock
    from core.exchange.gateway import GatewayError, RateLimited
    from core.scan.universe import select_universe

    x = cfg.exchange
    where = urlsplit(x.api_url).netloc if x.api_url else f"{x.id} (ccxt default endpoint)"
    sandbox = x.testnet or secrets.testnet
    checks = [Check("config", OK, f"{cfg.source}: valid; mode {cfg.mode}, exchange {x.id}"
                    + (f" via {x.api_url}" if x.api_url else "") + (", testnet" if sandbox else ""))]
    if gateway is None:
        from core.exchange.ccxt_gateway import CcxtGateway

        gateway = CcxtGateway(cfg, secrets, clock or WallClock())
    gw = gateway
    rate_limited: RateLimited | None = None

    def failed(name: str, exc: Exception) -> Check:
        nonlocal rate_limited
        if isinstance(exc, RateLimited):
            rate_limited = exc
        return Check(name, FAIL, str(exc) if isinstance(exc, GatewayError) else f"{type(exc).__name__}: {exc}")

    try:
        # connectivity + clock
        try:
            t0 = time.perf_counter()
            await gw.fetch_time()
            rtt_ms = (time.perf_counter() - t0) * 1000
            checks.append(Check("connectivity", OK, f"{where} answered in {rtt_ms:.0f} ms"))
        except Exception as exc:  # noqa: BLE001 - every failure is a verdict, not a traceback
            checks.append(failed("connectivity", exc))
            for name in ("server time", "markets", "universe", "order types", "API keys"):
                checks.append(Check(name, SKIP, "not checked: the exchange cannot be reached"))
            checks.append(_rate_limit_check(gw, rate_limited, x.weight_budget_pct)
                          if rate_limited else Check("rate limit", SKIP, "not checked: the exchange cannot be reached"))
            return checks
        off = gw.time_offset_ms or 0
        ahead = f"{abs(off) / 1000:.3f} s {'behind' if off > 0 else 'ahead of'} the exchange"
        if abs(off) < CLOCK_WARN_MS:
            checks.append(Check("server time", OK, f"our clock is {ahead}"))
        elif abs(off) < CLOCK_FAIL_MS:
            checks.append(Check("server time", WARN, f"our clock is {ahead}: signed requests are corrected "
                                "automatically, but fix time sync (timedatectl, systemd-timesyncd)"))
        else:
            checks.append(Check("server time", FAIL, f"our clock is {ahead}: candle timing would be wrong; "
                                "fix time sync (timedatectl, systemd-timesyncd)"))

        # markets + universe
        markets, sel = {}, []
        try:
            markets = await gw.load_markets()
            quote = cfg.universe.quote
            trading = [m for m in markets.values() if m.quote == quote and m.active]
            checks.append(Check("markets", OK if trading else FAIL,
                                f"{len(markets)} spot markets, {len(trading)} {quote} pairs trading"
                                + ("" if trading else f": nothing to trade in {quote} (universe.quote)")))
        except Exception as exc:  # noqa: BLE001
            checks.append(failed("markets", exc))
        if markets:
            try:
                tickers = await gw.fetch_tickers()
                sel = select_universe(markets, tickers, cfg.universe)
                top = ", ".join(sel[:5]) + (", ..." if len(sel) > 5 else "")
                checks.append(Check("universe", OK if sel else WARN,
                                    f"{len(sel)} pairs pass the universe filters ({top})" if sel else
                                    f"no pair passes the universe filters ({len(tickers)} tickers); relax "
                                    "universe.min_quote_volume / max_spread_pct or check universe.quote"))
            except Exception as exc:  # noqa: BLE001
                checks.append(failed("universe", exc))
        else:
            checks.append(Check("universe", SKIP, "not checked: no markets"))
        checks.append(_order_types_check(cfg, gw, sel))

        # keys
        if not secrets.has_keys:
            checks.append(Check("API keys", OK, "not set: fine for paper mode and public data "
                                f"(live mode needs BINANCE_API_KEY and BINANCE_API_SECRET in {secrets.source})"))
        else:
            try:
                balances = await gw.fetch_balance()
                quote = cfg.universe.quote
                checks.append(Check("API keys", OK, f"signed request accepted{' (testnet)' if sandbox else ''}; "
                                    f"{len(balances)} asset(s) with a free balance, "
                                    f"{balances.get(quote, 0):f} {quote} free"))
            except Exception as exc:  # noqa: BLE001
                checks.append(failed("API keys", exc))

        # rate limit, after our own requests
        checks.append(_rate_limit_check(gw, rate_limited, x.weight_budget_pct))
        return checks
    finally:
        await gw.close()


def _order_types_check(cfg, gw, symbols: list[str]) -> Check:
    """Can the universe's pairs carry the exchange-side protection (core/trading/protection.py): the
    symbol's ``orderTypes`` (STOP_LOSS_LIMIT, LIMIT_MAKER), ``ocoAllowed``, and ``cancelReplaceAllowed``
    when trailing stops are on."""
    from core.exchange.ccxt_orders import order_lists

    t = cfg.trading
    if t.exchange_stops == "off":
        return Check("order types", SKIP, "trading.exchange_stops is off: no stop rests on the exchange")
    lists = order_lists(gw)
    if lists is None or not symbols:
        return Check("order types", SKIP, "not checked: " + ("no pairs" if lists else "no exchange order rules"))
    oco = t.exchange_stops == "oco"
    trail = t.trailing_stop_pct > 0 or any(cfg.exits(name).trailing_stop_pct > 0 for name in cfg.strategies.enabled)
    short: dict[str, list[str]] = {}
    for sym in symbols:
        r = lists.rules(sym)
        if not r.known:
            continue
        if "STOP_LOSS_LIMIT" not in r.order_types:
            short.setdefault("no STOP_LOSS_LIMIT (only pitrader's monitor protects them)", []).append(sym)
        elif oco and not (r.oco_allowed and "LIMIT_MAKER" in r.order_types):
            short.setdefault("no OCO (a stop-limit alone)", []).append(sym)
        if trail and not r.cancel_replace_allowed:
            short.setdefault("no cancelReplace (the exchange stop does not trail)", []).append(sym)
    need = "STOP_LOSS_LIMIT" + (", OCO (ocoAllowed, LIMIT_MAKER)" if oco else "") + (", cancelReplace" if trail else "")
    if not short:
        return Check("order types", OK, f"all {len(symbols)} pairs accept {need}")
    return Check("order types", WARN, "; ".join(f"{why}: {', '.join(s[:5])}{', ...' if len(s) > 5 else ''}"
                                                for why, s in short.items()))


def _rate_limit_check(gw, rate_limited, budget_pct: float) -> Check:
    budget = gw.budget
    used = gw.last_used_weight
    left = budget.pause_remaining()
    if rate_limited is not None or left > 0:
        banned = budget.banned or (rate_limited is not None and rate_limited.banned)
        left = max(left, rate_limited.retry_after_s if rate_limited is not None else 0.0)
        return Check("rate limit", FAIL, ("IP banned by the exchange (HTTP 418)" if banned else
                                          "rate limited by the exchange (HTTP 429)")
                     + f"; requests resume in {left:.0f} s")
    if used is None:
        return Check("rate limit", OK, f"the exchange reports no used weight; our estimate {budget.used()} of our "
                     f"budget {budget.budget} per minute")
    detail = (f"{used} of {budget.limit} request weight used this minute "
              f"(our budget {budget.budget}, exchange.weight_budget_pct {budget_pct:g})")
    if used >= budget.limit * 0.9:
        return Check("rate limit", FAIL, detail + ": close to the exchange's limit; another program on this IP "
                     "is using it")
    if used > budget.budget:
        return Check("rate limit", WARN, detail + ": above our budget; another program on this IP shares the "
                     "limit, scans will wait for headroom")
    return Check("rate limit", OK, detail)


def render(console, checks: list[Check]) -> None:
    colour = {OK: "green", WARN: "yellow", FAIL: "red", SKIP: "dim"}
    t = Table(title="pitrader doctor", title_justify="left")
    t.add_column("check")
    t.add_column("verdict")
    t.add_column("detail", overflow="fold")
    for c in checks:
        t.add_row(c.check, f"[{colour[c.verdict]}]{c.verdict}[/]", c.detail)
    console.print(t)
    fails = [c.check for c in checks if c.verdict == FAIL]
    warns = [c.check for c in checks if c.verdict == WARN]
    if fails:
        console.print(f"[red]not ready[/]: {', '.join(fails)} failed")
    else:
        console.print("[green]ready[/]" + (f" (warnings: {', '.join(warns)})" if warns else ""))


def storage_checks(state_dir) -> list[Check]:
    """The directories the service writes: the state directory and the numba cache."""
    from core.commands._storage import numba_cache_dir, problems

    found = {p.what.split(" ")[0]: p for p in problems(state_dir)}
    out = [Check("state directory", FAIL, str(found["state"])) if "state" in found else
           Check("state directory", OK, f"{state_dir}: writable")]
    cache = numba_cache_dir()
    if "numba" in found:
        out.append(Check("numba cache", FAIL, str(found["numba"])))
    else:
        out.append(Check("numba cache", OK, f"{cache}: writable" if cache else
                         "NUMBA_CACHE_DIR unset: numba caches next to the package (the service sets it)"))
    return out


async def notify_checks(cfg, secrets) -> list[Check]:
    """The notification channels, checked without sending anyone a message (Telegram: getMe)."""
    from core.commands.notify import check_channels

    rows = await check_channels(cfg, secrets, send=False)
    if not rows:
        return [Check("notifications", SKIP, "no channel enabled (README: Notifications)")]
    return [Check(f"notify {r['channel']}", OK if r["ok"] else FAIL, r["detail"]) for r in rows]


def run(args, ctx) -> int:
    cfg = ctx.config()
    secrets = ctx.secrets()
    checks = storage_checks(ctx.state_dir) + asyncio.run(diagnose(cfg, secrets)) + asyncio.run(
        notify_checks(cfg, secrets))
    if args.json:
        print(json.dumps({"ok": not any(c.verdict == FAIL for c in checks),
                          "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        render(ctx.console, checks)
    return 1 if any(c.verdict == FAIL for c in checks) else 0
