"""`pitrader notify test`: send a test message to every configured channel and report each result."""
from __future__ import annotations

import asyncio
import json
import time

NAME = "notify"
HELP = "notifications: `notify test` sends a test message to every configured channel"


def configure(p) -> None:
    sub = p.add_subparsers(dest="notify_cmd", metavar="ACTION", required=True)
    test = sub.add_parser("test", help="send a test message to every enabled channel and report each result")
    test.add_argument("--json", action="store_true", help="print machine-readable JSON")


async def check_channels(cfg, secrets, send: bool) -> list[dict]:
    """One row per channel: ``{"channel", "ok", "detail"}``. ``send``: a real test message; otherwise
    only what can be checked without bothering anyone (Telegram's getMe for the token)."""
    import aiohttp

    from core.events import Event
    from core.notify.channels import DeliveryError, Message, TelegramChannel
    from core.notify.service import build_channels

    rows = []
    channels = build_channels(cfg, secrets)
    text = f"pitrader test message ({cfg.mode} mode): this channel works."
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=cfg.notify.timeout_s)) as session:
        for ch in channels:
            try:
                if send:
                    await ch.send(session, Message((Event("test", text, int(time.time() * 1000)),), text))
                    detail = "test message delivered"
                elif isinstance(ch, TelegramChannel):
                    await ch.get_me(session)
                    detail = "bot token accepted (getMe)"
                else:
                    detail = "configured (`pitrader notify test` sends a message)"
                rows.append({"channel": ch.name, "ok": True, "detail": detail})
            except DeliveryError as exc:
                hint = " (check TELEGRAM_BOT_TOKEN / the chat id)" if exc.config else ""
                rows.append({"channel": ch.name, "ok": False, "detail": f"{exc}{hint}"})
    return rows


def run(args, ctx) -> int:
    cfg, secrets = ctx.config(), ctx.secrets()
    rows = asyncio.run(check_channels(cfg, secrets, send=True))
    if args.json:
        print(json.dumps({"channels": rows}, indent=2))
    elif not rows:
        ctx.console.print("no notification channel is enabled: set notify.telegram.enabled or "
                          "notify.webhook.enabled in the config (README: Notifications)")
    for r in rows if not args.json else ():
        mark = "[green]ok[/]" if r["ok"] else "[red]failed[/]"
        ctx.console.print(f"{mark} {r['channel']}: {r['detail']}", soft_wrap=True)
    return 0 if rows and all(r["ok"] for r in rows) else 1
