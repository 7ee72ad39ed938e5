"""`pitrader status [--json] [--resume]`: what the bot holds and is doing, read from its state DB.

Reads the database of the configured mode (``paper.db`` / ``live.db``) without touching the
running service. ``--resume`` asks the risk gate to lift a drawdown halt; the running service
picks the request up at its next cycle (or at its next start).
"""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from core.commands._summary import LAST_PRICES_KEY

NAME = "status"
STATS_WINDOW_MS = 90 * 86_400_000  # the equity curve behind status's statistics: last 90 days
HELP = "show equity, open positions, today's PnL, halts and the last scan (--resume lifts a drawdown halt)"


def configure(p) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--db", metavar="NAME|FILE",
                   help="read another state database: paper, live, replay (what `run --replay` writes, in the "
                        "state directory) or a file path; default: the configured mode's")
    p.add_argument("--resume", action="store_true",
                   help="lift the drawdown halt (the running service applies it at its next cycle)")


def _state(db, key: str) -> Any:
    return db.state(key)


def _num(v: Any) -> float | None:
    return None if v is None else float(Decimal(str(v)))


def _utc(ms: int | None, fmt: str = "%Y-%m-%d %H:%M UTC") -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, timezone.utc).strftime(fmt)


def collect(path: Path, mode: str, now_ms: int | None = None) -> dict[str, Any]:
    """The status document (the `--json` output) from the state DB at ``path``."""
    from core.trading.risk import STATE_KEY, utc_day
    from core.trading.stats import trade_stats
    from core.store import protections
    from core.store.readonly import StateReader

    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    doc: dict[str, Any] = {"mode": mode, "equity": None, "open_positions": [], "day_pnl": None, "halts": [],
                           "last_scan": None, "health": None}
    if not path.exists():
        return doc
    conn = StateReader(path)  # read-only; an unusable file raises StateDatabaseError (exit 74)
    try:
        if not conn.has_state():
            return doc
        risk = _state(conn, STATE_KEY) or {}
        snap = conn.last_equity()
        equity = risk.get("last_equity") or (snap[1] if snap else None)
        doc["equity"] = _num(equity)
        positions = conn.positions()
        marks = _state(conn, LAST_PRICES_KEY) or {}
        prices, marked_ms = marks.get("prices") or {}, marks.get("ts_ms")
        resting = protections.resting_sync(conn.conn)  # exchange-side stops (core/trading/protection.py)
        doc["open_positions"] = [
            {"id": p.id, "symbol": p.symbol, "strategy": p.strategy, "status": p.status, "amount": float(p.amount),
             "entry_price": float(p.entry_price), "stop": float(p.stop), "target": float(p.target),
             "highest": float(p.highest), "opened_ms": p.opened_ms, "score": p.score,
             "entry_fees": float(p.entry_fees), **_unrealised(p, prices.get(p.symbol), marked_ms),
             "resting_orders": [_resting(r) for r in resting.get(p.id, [])]}
            for p in positions if p.status != "closed"]
        today = utc_day(now_ms)
        if risk.get("day") == today and equity is not None and risk.get("day_start_equity") is not None:
            doc["day_pnl"] = float(Decimal(str(equity)) - Decimal(str(risk["day_start_equity"])))
        else:  # the engine has not run today: only trades closed today count
            day_start = now_ms // 86_400_000 * 86_400_000
            doc["day_pnl"] = float(sum((p.pnl for p in positions if p.status == "closed" and p.pnl is not None
                                        and (p.closed_ms or 0) >= day_start), Decimal(0)))
        doc["halts"] = [{"halt": name, "reason": h.get("reason", ""), "since_ms": h.get("since_ms"),
                         "until_ms": h.get("until_ms")} for name, h in (risk.get("halts") or {}).items()]
        doc["last_scan"] = _state(conn, "last_scan")
        doc["health"] = _state(conn, "health")
        closed = [p for p in positions if p.status == "closed"]
        if closed:
            since = now_ms - STATS_WINDOW_MS  # months of minute snapshots would be slow on a Pi
            curve = conn.equity_since(since)
            start = curve[0][1] if curve else Decimal(0)
            doc["_stats"] = trade_stats(closed, curve, start)
    finally:
        conn.close()
    return doc


def _resting(r) -> dict[str, Any]:
    """One exchange-side protection of a position, as `status --json` shows it."""
    return {"kind": r.kind, "status": r.status, "list_id": r.list_id, "stop_id": r.stop_id, "target_id": r.target_id,
            "amount": float(r.amount), "stop": float(r.stop), "limit": float(r.limit),
            "target": None if r.target is None else float(r.target)}


def _unrealised(p, last: float | None, ts_ms: int | None) -> dict[str, Any]:
    """Last price the engine marked (no network here), and the position's PnL at it: value minus
    what it cost including the entry fee; the % is of that cost."""
    if last is None or p.amount <= 0:
        return {"last_price": None, "last_price_ms": None, "unrealised_pnl": None, "unrealised_pct": None}
    cost = p.amount * p.entry_price + p.entry_fees
    pnl = p.amount * Decimal(str(last)) - cost
    return {"last_price": float(last), "last_price_ms": ts_ms, "unrealised_pnl": float(pnl),
            "unrealised_pct": float(pnl / cost) if cost > 0 else None}


def _request_resume(path: Path, console) -> int:
    from core.store.readonly import read_state, write_state
    from core.trading.risk import DRAWDOWN, RESUME_KEY, STATE_KEY

    if not path.exists():
        console.print(f"[yellow]no state database at {path}: nothing to resume[/]")
        return 0
    risk = read_state(path, STATE_KEY) or {}
    if DRAWDOWN not in (risk.get("halts") or {}):
        console.print("no drawdown halt is in force: nothing to resume")
        return 0
    write_state(path, RESUME_KEY, {"requested_ms": int(time.time() * 1000), "by": "pitrader status"})
    console.print("[green]resume requested[/]: the service lifts the drawdown halt at its next cycle "
                  "(or when it next starts); the drawdown then counts from the equity at that moment")
    return 0


def _signed(x: float | None, places: int = 2) -> str:
    return "-" if x is None else f"{x:+,.{places}f}"


def render(console, doc: dict[str, Any], quote: str = "") -> None:
    """What a person asks: how am I doing (equity, today, each position at its last price), then
    what the bot is doing (halts, last scan, health in one line). The raw records are in --json."""
    from core.service.tables import fit_table, num

    eq, day = doc["equity"], doc["day_pnl"]
    colour = "green" if (day or 0) >= 0 else "red"
    unit = f" {quote}" if quote else ""
    opens = doc["open_positions"]
    unreal = [p["unrealised_pnl"] for p in opens if p.get("unrealised_pnl") is not None]
    line = (f"mode [bold]{doc['mode']}[/]  equity [bold]{'-' if eq is None else f'{eq:,.2f}'}[/]{unit}  "
            f"today [{colour}]{_signed(day)}[/]")
    if unreal:
        line += f"  open positions {_signed(sum(unreal))}{unit} unrealised"
    console.print(line)
    for h in doc["halts"]:
        until = f" (until {_utc(h['until_ms'])})" if h.get("until_ms") else ""
        console.print(f"[bold red]HALT[/] {h['halt']}{until}: {h['reason']}")
    if opens:
        right = {"justify": "right"}
        cols = [("symbol", {}), ("strategy", {}), ("amount", right), ("entry", right), ("last", right),
                ("PnL", right), ("PnL %", right), ("stop", right), ("target", right), ("opened", {})]
        rows = []
        for p in opens:
            state = "entering" if p["amount"] <= 0 else p["status"]
            has = p.get("last_price") is not None
            pnl_style = "green" if (p.get("unrealised_pnl") or 0) >= 0 else "red"
            rows.append([p["symbol"] + ("" if state == "open" else f" ({state})"), p["strategy"], num(p["amount"]),
                         num(p["entry_price"]), num(p["last_price"]) if has else "no price yet",
                         f"[{pnl_style}]{_signed(p['unrealised_pnl'])}[/]" if has else "-",
                         f"{p['unrealised_pct'] * 100:+.2f}%" if has and p["unrealised_pct"] is not None else "-",
                         num(p["stop"]), num(p["target"]), _utc(p["opened_ms"], "%m-%d %H:%M")])
        marked = next((p["last_price_ms"] for p in opens if p.get("last_price_ms")), None)
        title = f"{len(opens)} open positions" + (f" (prices as of {_utc(marked)})" if marked else "")
        console.print(fit_table(console, cols, rows, drop=("opened", "amount", "strategy", "target", "PnL %"),
                                title=title))
        for p in opens:
            for r in p.get("resting_orders") or ():
                what = (f"OCO take-profit {num(r['target'])} / stop {num(r['stop'])} limit {num(r['limit'])}"
                        if r["kind"] == "oco" else f"stop {num(r['stop'])} limit {num(r['limit'])}")
                console.print(f"  {p['symbol']} #{p['id']} on the exchange: {what} x {num(r['amount'])}"
                              + ("" if r["status"] == "active" else f" ({r['status']})"), highlight=False)
            if not p.get("resting_orders") and doc["mode"] == "live" and p["amount"] > 0:
                console.print(f"  [yellow]{p['symbol']} #{p['id']}: no stop resting on the exchange[/]")
    else:
        console.print("no open positions")
    st = doc.get("_stats")
    if st is not None:
        pf = "-" if st.profit_factor is None else f"{st.profit_factor:.2f}"
        console.print(f"closed: {st.trades} trades, win rate {st.win_rate:.0%}, PnL {float(st.pnl):+,.2f}, fees "
                      f"{float(st.fees):,.2f}, profit factor {pf}, max drawdown {st.max_drawdown:.1%}")
    scan = doc["last_scan"]
    if scan:
        tops = ", ".join(f"{o.get('symbol')} {o.get('strategy', '')} {o.get('score', '')}"
                         for o in (scan.get("opportunities") or [])[:5]) or "none"
        console.print(f"last scan {_utc(scan.get('ts_ms'), '%Y-%m-%d %H:%M:%S UTC')}: "
                      f"{scan.get('pairs_scanned')} pairs, {scan.get('pairs_skipped')} skipped, "
                      f"{scan.get('duration_s')} s; top: {tops}", highlight=False)
    else:
        console.print("no scan recorded yet")
    health = doc.get("health") or {}
    if health:
        summary = str(health.get("summary") or "ok")
        console.print(summary if summary.startswith("health") else f"health: {summary}", highlight=False)


def resolve_db(state_dir: Path, mode: str, db: str | None) -> tuple[Path, str]:
    """(database path, the mode shown): ``--db`` paper/live/replay name a file in the state directory."""
    from core.store.state import db_path

    if not db:
        return db_path(state_dir, mode), mode
    if db in ("paper", "live"):
        return db_path(state_dir, db), db
    if db == "replay":
        return state_dir / "replay.db", "paper (replay)"
    return Path(db), mode


def run(args, ctx) -> int:
    cfg = ctx.config_or_defaults() if args.db else ctx.config()
    path, mode = resolve_db(ctx.state_dir, cfg.mode, args.db)
    if args.resume:
        return _request_resume(path, ctx.console)
    if args.db and not path.exists():
        print(f"pitrader status: --db {args.db}: no state database at {path}", file=sys.stderr)
        return 66  # EX_NOINPUT
    doc = collect(path, mode)
    if args.json:
        doc.pop("_stats", None)
        print(json.dumps(doc))
        return 0
    if not path.exists():
        ctx.console.print(f"[yellow]no state yet at {path}[/]: the bot has not run in {cfg.mode} mode here")
    render(ctx.console, doc, cfg.universe.quote)
    return 0
