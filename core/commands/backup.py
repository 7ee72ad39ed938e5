"""`pitrader backup list | verify [FILE] | restore FILE | rebuild`: the state database's backups.

The service takes them itself (daily and before each schema migration, ``store.backups_keep``
kept, in ``STATE/backups``); ``restore`` refuses while the service runs and keeps the file it
replaces; ``rebuild`` (live) adds what the exchange knows happened after the backup.
"""
from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

NAME = "backup"
HELP = "list, verify and restore backups of the state database; rebuild live state from the exchange"


def configure(p) -> None:
    sub = p.add_subparsers(dest="backup_cmd", metavar="ACTION", required=True)
    sub.add_parser("list", help="the backups in STATE/backups, oldest first")
    v = sub.add_parser("verify", help="integrity-check one backup (default: every backup and the database itself)")
    v.add_argument("file", metavar="FILE", nargs="?")
    r = sub.add_parser("restore", help="put a backup in place of the database (the service must be stopped; the "
                                       "replaced file is kept as *.replaced-<time>)")
    r.add_argument("file", metavar="FILE", help="a backup (a path, or a name from `backup list`)")
    b = sub.add_parser("now", help="take a backup now (also while the service runs)")
    b.set_defaults(backup_cmd="now")
    rb = sub.add_parser("rebuild", help="live: add the orders, fills and positions the exchange knows of that the "
                                        "database lacks (after restoring an old backup); the service must be stopped")
    rb.add_argument("--all-symbols", action="store_true",
                    help="also search every market of the quote currency (slower; finds positions opened and "
                         "closed entirely after the backup on a pair the database never traded)")
    for sp in (v, r, b, rb):
        sp.add_argument("--paper", action="store_true", help="the paper database (default: the configured mode's)")


def _db(args, ctx) -> Path:
    from core.store.state import db_path

    mode = "paper" if getattr(args, "paper", False) else ctx.config_or_defaults().mode
    return db_path(ctx.state_dir, mode)


def _when(taken: str) -> str:
    fmt = "%Y%m%dT%H%M%SZ" if len(taken) == 16 else "%Y%m%dT%H%MZ"
    return datetime.strptime(taken, fmt).replace(tzinfo=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _resolve(name: str, db: Path) -> Path:
    from core.store.backup import backup_dir

    p = Path(name)
    if not p.exists() and (backup_dir(db) / name).exists():
        p = backup_dir(db) / name
    if not p.exists():
        raise FileNotFoundError(2, "no such backup", str(p))
    return p


def _running(ctx) -> str | None:
    from core.store.backup import ServiceLock

    return ServiceLock(ctx.state_dir).holder()


def run(args, ctx) -> int:
    from core.store.backup import backup_dir, list_backups, make_backup, restore, verify
    from core.store.errors import StateDatabaseError

    db = _db(args, ctx)
    out = ctx.console
    if args.backup_cmd == "list":
        items = list_backups(backup_dir(db))
        if not items:
            out.print(f"no backups in {backup_dir(db)} (the service takes one a day and before each migration)")
            return 0
        for b in items:
            out.print(f"{b.path.name}  {_when(b.taken)}  {b.kind}  {b.size:,} bytes", soft_wrap=True)
        return 0
    if args.backup_cmd == "verify":
        targets = [_resolve(args.file, db)] if args.file else (
            [b.path for b in list_backups(backup_dir(db))] + ([db] if db.exists() else []))
        bad = 0
        for path in targets:
            problem = verify(path)
            bad += problem is not None
            out.print(f"{path}: {'ok' if problem is None else 'BAD: ' + problem}", soft_wrap=True)
        if not targets:
            out.print(f"nothing to verify in {ctx.state_dir}")
        return 1 if bad else 0
    if args.backup_cmd == "now":
        cfg = ctx.config_or_defaults()
        if not db.exists():
            raise FileNotFoundError(2, "no state database to back up", str(db))
        out.print(f"backed up to {make_backup(db, cfg.store.backups_keep)}", soft_wrap=True)
        return 0
    pid = _running(ctx)
    if pid is not None:
        raise StateDatabaseError(db, f"a running pitrader (pid {pid}) holds it",
                                 "stop the service first (systemctl stop pitrader)")
    if args.backup_cmd == "restore":
        kept = restore(_resolve(args.file, db), db)
        out.print(f"restored {db} from {args.file}" + (f"; the replaced file is kept as {kept}" if kept else ""),
                  soft_wrap=True)
        if db.stem == "live":
            out.print("live mode: now run `pitrader backup rebuild` so the orders and fills since the backup are "
                      "added from the exchange before the service starts", soft_wrap=True)
        return 0
    return _rebuild(args, ctx, db)


def _rebuild(args, ctx, db: Path) -> int:
    import asyncio

    from core.config import ConfigError
    from core.exchange.setup import live_setup
    from core.store.state import Store
    from core.trading.rebuild import NothingToRebuild, rebuild

    cfg = ctx.config()
    if cfg.mode != "live" or db.stem != "live":
        raise ConfigError(cfg.source, "mode", 'expected "live" for `backup rebuild` (paper trades exist only in '
                                              "the database; restore a backup instead)")
    if not db.exists():
        raise FileNotFoundError(2, "no state database (restore a backup first: pitrader backup restore FILE)",
                                str(db))

    async def go():
        gateway, clock = live_setup(cfg, ctx.secrets())
        try:
            async with Store.open(db) as store:
                return await rebuild(cfg, store, gateway, clock, all_symbols=args.all_symbols)
        finally:
            await gateway.close()

    try:
        rep = asyncio.run(go())
    except NothingToRebuild as exc:
        print(f"pitrader: {exc}", file=sys.stderr)
        return 0
    out = ctx.console
    out.print(f"rebuild of {db}: {len(rep.symbols)} symbols checked; {len(rep.orders)} orders and "
              f"{len(rep.positions)} positions added; fills {rep.fills_before} -> {rep.fills_after}; "
              f"{rep.open_positions} open positions", soft_wrap=True)
    for sym, ids in rep.unmatched_orders.items():
        out.print(f"  {sym}: {len(ids)} orders since the backup are not this database's (left alone)", soft_wrap=True)
    return 0
