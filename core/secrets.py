"""Secrets from the process environment and the env file; never shown, only whether they are set."""
from __future__ import annotations

import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from core.config import Config
from core.fields import ConfigError

SECRET_KEYS = ("BINANCE_API_KEY", "BINANCE_API_SECRET")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def mask(value: str | None) -> str:
    """How a secret is shown anywhere: whether it is set, never any of its characters."""
    return "(not set)" if not value else f"(set, {len(value)} characters)"


@dataclass(frozen=True)
class Secrets:
    api_key: str | None = field(default=None, repr=False)
    api_secret: str | None = field(default=None, repr=False)
    testnet: bool = False
    source: str = "<environment>"
    telegram_token: str | None = field(default=None, repr=False)
    webhook_url: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # never leak the values, even in a traceback
        return (f"Secrets(api_key={mask(self.api_key)}, api_secret={mask(self.api_secret)}, testnet={self.testnet}, "
                f"telegram_token={mask(self.telegram_token)}, webhook_url={mask(self.webhook_url)})")

    __str__ = __repr__

    @property
    def has_keys(self) -> bool:
        return bool(self.api_key and self.api_secret)

    def masked(self) -> dict[str, str]:
        return {"BINANCE_API_KEY": mask(self.api_key), "BINANCE_API_SECRET": mask(self.api_secret),
                "BINANCE_TESTNET": str(self.testnet).lower(), "TELEGRAM_BOT_TOKEN": mask(self.telegram_token),
                "NOTIFY_WEBHOOK_URL": mask(self.webhook_url)}

    def values(self) -> tuple[str, ...]:
        """Every secret that is set: what log redaction must hide."""
        return tuple(v for v in (self.api_key, self.api_secret, self.telegram_token, self.webhook_url) if v)


def default_env_path() -> Path | None:
    """--env-file default: $PITRADER_ENV_FILE, /etc/pitrader/pitrader.env, ./.env (first readable one).

    The installed secrets file is root-only (the service gets it as a systemd credential), so
    for a non-root `pitrader status` over SSH it is skipped rather than being an error.
    """
    env = os.environ.get("PITRADER_ENV_FILE")
    if env:
        return Path(env)
    for cand in (Path("/etc/pitrader/pitrader.env"), Path(".env")):
        if cand.exists() and os.access(cand, os.R_OK):
            return cand
    return None


def load_secrets(path: str | os.PathLike | None, environ: typing.Mapping[str, str] | None = None) -> Secrets:
    """Process environment first (systemd's EnvironmentFile= puts them there), then the env file."""
    from dotenv import dotenv_values

    environ = os.environ if environ is None else environ
    values: dict[str, str | None] = {}
    source = "<environment>"
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(p, "(file)", "env file not found")
        try:
            values = dict(dotenv_values(p))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(p, "(file)", f"cannot be read: {exc.__class__.__name__}") from None
        source = str(p)

    def get(name: str) -> str | None:
        v = environ.get(name)
        if v is None:
            v = values.get(name)
        v = v.strip() if v else v
        return v or None

    raw_testnet = (get("BINANCE_TESTNET") or "").lower()
    if raw_testnet not in _TRUE | _FALSE:
        raise ConfigError(source, "BINANCE_TESTNET", "expected true or false (1/0, yes/no)")
    for name in SECRET_KEYS:
        v = get(name)
        if v is not None and (len(v) < 8 or any(c.isspace() for c in v)):
            # Say what is wrong without echoing the value.
            raise ConfigError(source, name, "expected a single token of at least 8 characters without spaces")
    token, hook = get("TELEGRAM_BOT_TOKEN"), get("NOTIFY_WEBHOOK_URL")
    if token is not None and not re.fullmatch(r"\d{3,20}:[A-Za-z0-9_-]{20,100}", token):
        raise ConfigError(source, "TELEGRAM_BOT_TOKEN", "expected a bot token as BotFather gives it (digits:letters)")
    if hook is not None and not re.fullmatch(r"https?://[^\s]+", hook):
        raise ConfigError(source, "NOTIFY_WEBHOOK_URL", "expected an http:// or https:// URL without spaces")
    return Secrets(get("BINANCE_API_KEY"), get("BINANCE_API_SECRET"), raw_testnet in _TRUE, source, token, hook)


def check_mode(cfg: Config, secrets: Secrets) -> None:
    """Live trading needs both keys, an enabled channel its secret: config errors, not runtime surprises."""
    if cfg.mode == "live" and not secrets.has_keys:
        missing = "BINANCE_API_KEY" if not secrets.api_key else "BINANCE_API_SECRET"
        raise ConfigError(secrets.source, missing, 'required when "mode" is "live" in ' + cfg.source)
    if cfg.notify.telegram.enabled and not secrets.telegram_token:
        raise ConfigError(secrets.source, "TELEGRAM_BOT_TOKEN", "required when notify.telegram.enabled is true in "
                          + cfg.source)
    if cfg.notify.webhook.enabled and not secrets.webhook_url:
        raise ConfigError(secrets.source, "NOTIFY_WEBHOOK_URL", "required when notify.webhook.enabled is true in "
                          + cfg.source)
