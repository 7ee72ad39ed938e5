"""`pitrader status [--json] [--resume]`: what the bot holds and is doing, read from its state DB.

Reads the database of the configured mode (``paper.db`` / ``live.db``) without touching the
running service. ``--resume`` asks the risk gate to lift a drawdown halt; the running service
picks the request up at its next cycle (or at its next start).
"""
from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.table import Table

NAME = "status"
STATS_WINDOW_MS = 90 * 86_400_000  # the equity curve behind status's statistics: last 90 days
HELP = "show equity, open positions, today's PnL, halts and the last scan (--resume lifts a drawdown halt)"


def configure(p) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--resume", action="store_true",
                   help="lift the drawdown halt (the running service applies it at its next cycle)")


def _state(conn: sqlite3.Connection, key: str) -> Any:
    row = conn.execute("SELECT value FROM bot_state WHERE key=?", (key,)).fetchone()
    return None if row is None else json.loads(row[0])


def _num(v: Any) -> float | None:
    return None if v is None else float(Decimal(str(v)))


def _utc(ms: int | None, fmt: str = "%Y-%m-%d %H:%M UTC") -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, timezone.utc).strftime(fmt)


def collect(path: Path, mode: str, now_ms: int | None = None) -> dict[str, Any]:
    """The status document (the `--json` output) from the state DB at ``path``."""
    from core.trading.risk import STATE_KEY, utc_day
    from core.trading.stats import trade_stats
    from core.store.state import POSITION_COLUMNS, position_from_row

    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    doc: dict[str, Any] = {"mode": mode, "equity": None, "open_positions": [], "day_pnl": None, "halts": [],
                           "last_scan": None, "health": None}
    if not path.exists():
        return doc
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        if conn.execute("SELECT name FROM sqlite_master WHERE name='bot_state'").fetchone() is None:
            return doc
        risk = _state(conn, STATE_KEY) or {}
        snap = conn.execute("SELECT ts_ms, equity FROM equity ORDER BY ts_ms DESC LIMIT 1").fetchone()
        equity = risk.get("last_equity") or (snap[1] if snap else None)
        doc["equity"] = _num(equity)
        rows = conn.execute(f"SELECT {POSITION_COLUMNS} FROM positions ORDER BY id").fetchall()
        positions = [position_from_row(tuple(r)) for r in rows]
        doc["open_positions"] = [
            {"id": p.id, "symbol": p.symbol, "strategy": p.strategy, "status": p.status, "amount": float(p.amount),
             "entry_price": float(p.entry_price), "stop": float(p.stop), "target": float(p.target),
             "highest": float(p.highest), "opened_ms": p.opened_ms, "score": p.score,
             "entry_fees": float(p.entry_fees)}
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
            curve = [(ts, Decimal(e)) for ts, e in conn.execute(
                "SELECT ts_ms, equity FROM equity WHERE ts_ms >= ? ORDER BY ts_ms", (since,))]
            start = curve[0][1] if curve else Decimal(0)
            doc["_stats"] = trade_stats(closed, curve, start)
    finally:
        conn.close()
    return doc


def _request_resume(path: Path, console) -> int:
    from core.trading.risk import DRAWDOWN, RESUME_KEY, STATE_KEY

    if not path.exists():
        console.print(f"[yellow]no state database at {path}: nothing to resume[/]")
        return 0
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        risk = _state(conn, STATE_KEY) or {}
        if DRAWDOWN not in (risk.get("halts") or {}):
            console.print("no drawdown halt is in force: nothing to resume")
            return 0
        conn.execute("INSERT OR REPLACE INTO bot_state (key, value) VALUES (?, ?)",
                     (RESUME_KEY, json.dumps({"requested_ms": int(time.time() * 1000), "by": "pitrader status"})))
    finally:
        conn.close()
    console.print("[green]resume requested[/]: the service lifts the drawdown halt at its next cycle "
                  "(or when it next starts); the drawdown then counts from the equity at that moment")
    return 0


def render(console, doc: dict[str, Any]) -> None:
    eq = doc["equity"]
    day = doc["day_pnl"]
    colour = "green" if (day or 0) >= 0 else "red"
    console.print(f"mode [bold]{doc['mode']}[/]  equity [bold]{'-' if eq is None else f'{eq:,.2f}'}[/]  "
                  f"today [{colour}]{'-' if day is None else f'{day:+,.2f}'}[/]")
    for h in doc["halts"]:
        until = f" (until {_utc(h['until_ms'])})" if h.get("until_ms") else ""
        console.print(f"[bold red]HALT[/] {h['halt']}{until}: {h['reason']}")
    if doc["open_positions"]:
        t = Table(title=f"{len(doc['open_positions'])} open positions", title_justify="left")
        for col in ("symbol", "strategy", "amount", "entry", "stop", "target", "opened"):
            t.add_column(col, no_wrap=col in ("symbol", "opened"),
                         justify="left" if col in ("symbol", "strategy", "opened") else "right")
        for p in doc["open_positions"]:
            state = "entering" if p["amount"] <= 0 else p["status"]
            t.add_row(p["symbol"] + ("" if state == "open" else f" ({state})"), p["strategy"],
                      f"{p['amount']:.6g}", f"{p['entry_price']:.6g}", f"{p['stop']:.6g}", f"{p['target']:.6g}",
                      _utc(p["opened_ms"], "%m-%d %H:%M"))
        console.print(t)
    else:
        console.print("no open positions")
    st = doc.get("_stats")
    if st is not None:
        pf = "-" if st.profit_factor is None else f"{st.profit_factor:.2f}"
        console.print(f"{st.trades} trades, win rate {st.win_rate:.0%}, PnL {float(st.pnl):+,.2f}, fees "
                      f"{float(st.fees):,.2f}, profit factor {pf}, max drawdown {st.max_drawdown:.1%}")
    scan = doc["last_scan"]
    if scan:
        tops = ", ".join(f"{o.get('symbol')} {o.get('strategy', '')} {o.get('score', '')}"
                         for o in (scan.get("opportunities") or [])[:5]) or "none"
        console.print(f"last scan {_utc(scan.get('ts_ms'), '%Y-%m-%d %H:%M:%S UTC')}: "
                      f"{scan.get('pairs_scanned')} pairs, {scan.get('pairs_skipped')} skipped, "
                      f"{scan.get('duration_s')} s; top: {tops}")
    else:
        console.print("no scan recorded yet")
    if doc.get("health"):
        console.print("health: " + ", ".join(f"{k} {v}" for k, v in doc["health"].items()
                                              if not isinstance(v, (dict, list))))


def run(args, ctx) -> int:
    from core.store.state import db_path

    cfg = ctx.config()
    path = db_path(ctx.state_dir, cfg.mode)
    if args.resume:
        return _request_resume(path, ctx.console)
    doc = collect(path, cfg.mode)
    if args.json:
        doc.pop("_stats", None)
        print(json.dumps(doc))
        return 0
    if not path.exists():
        ctx.console.print(f"[yellow]no state yet at {path}[/]: the bot has not run in {cfg.mode} mode here")
    render(ctx.console, doc)
    return 0
