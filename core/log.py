"""Logging for a service that is read through journalctl and for a person at a terminal.

Three console modes, picked from where stderr goes:

* ``journal``: stderr is connected to journald (``$JOURNAL_STREAM`` names its device and inode).
  Plain lines prefixed with the syslog priority (``<3>`` error, ``<4>`` warning, ``<6>`` info,
  ``<7>`` debug) so ``journalctl`` colours errors and warnings and ``-p`` filters; no ANSI escapes
  (journalctl would show them as "[N B blob data]"), no wrapping, no timestamps (journald adds them).
* ``terminal``: rich colour output.
* ``plain``: pipes and files get timestamped lines.

Secrets registered with :func:`register_secret` are replaced by ``***`` in everything any of our
handlers writes, including tracebacks: defence in depth behind the config module's masking.

Orders and fills also go to a small rotating JSON-lines audit log (``audit.log`` under
``$LOGS_DIRECTORY``): recent Raspberry Pi OS images keep the journal in RAM only.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import json
import logging
import logging.handlers
import os
import re
import sys
import threading
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Mapping

AUDIT_LOGGER = "pitrader.audit"
AUDIT_FILE = "audit.log"
REDACTED = "***"
MIN_SECRET_LEN = 4  # shorter values ("1", "true") would redact ordinary words

# Loggers that drown ours at DEBUG/INFO; they still pass warnings and errors.
_QUIET = {"numba": logging.WARNING, "llvmlite": logging.WARNING, "asyncio": logging.WARNING,
          "aiosqlite": logging.INFO, "urllib3": logging.INFO}

_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_installed: list[logging.Handler] = []


# --- secrets ------------------------------------------------------------------------------------

def register_secret(value: str | None) -> None:
    """Never let ``value`` reach a log line. Call it for every API key/secret once loaded."""
    if value and len(value) >= MIN_SECRET_LEN:
        with _secrets_lock:
            _secrets.add(value)


def clear_secrets() -> None:
    """Forget registered secrets (tests; a reload that replaced the keys registers the new ones)."""
    with _secrets_lock:
        _secrets.clear()


def redact(text: str) -> str:
    # Longest first, so a secret containing another one is replaced whole.
    for s in sorted(_secrets, key=len, reverse=True):
        if s in text:
            text = text.replace(s, REDACTED)
    return text


class RedactSecrets(logging.Filter):
    """Rewrites a record whose message or traceback contains a registered secret.

    Sits on handlers (not loggers) so records propagated from any library logger pass through it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        try:
            msg = record.getMessage()
        except Exception:  # a broken format string: keep what we can show safely
            msg = f"{record.msg!s} {record.args!r}"
        clean = redact(msg)
        if clean != msg or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            text = redact(record.exc_text)
            if text != record.exc_text:
                # Drop exc_info so no handler re-renders the original (e.g. a rich traceback).
                record.exc_text, record.exc_info = text, None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


# --- console modes ------------------------------------------------------------------------------

def output_mode(stream: IO[str] | None = None, environ: Mapping[str, str] | None = None) -> str:
    """``journal``, ``terminal`` or ``plain`` for a log stream (default: stderr)."""
    stream = sys.stderr if stream is None else stream
    environ = os.environ if environ is None else environ
    if is_journal_stream(stream, environ):
        return "journal"
    try:
        if stream.isatty():
            return "terminal"
    except (AttributeError, ValueError):
        pass
    return "plain"


def is_journal_stream(stream: IO[str], environ: Mapping[str, str]) -> bool:
    """True when ``stream`` is the journald connection systemd handed us (not merely inherited)."""
    value = environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


def syslog_priority(levelno: int) -> int:
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class JournalFormatter(logging.Formatter):
    """``<N>logger: message``; every line of a multi-line record (tracebacks) carries the prefix."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        text = _CONTROL.sub("?", _ANSI.sub("", text.replace("\r\n", "\n").replace("\t", "    ")))
        prefix = f"<{syslog_priority(record.levelno)}>"
        first, *rest = text.split("\n")
        lines = [f"{prefix}{record.name}: {first}"] + [f"{prefix}  {line}" for line in rest if line.strip()]
        return "\n".join(lines)


class PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        t = _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc)
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"


def _console_handler(mode: str, stream: IO[str]) -> logging.Handler:
    if mode == "terminal":
        from rich.console import Console
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=Console(file=stream), show_path=False, markup=False,
                                               rich_tracebacks=True, log_time_format="%H:%M:%S")
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        return handler
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter() if mode == "journal" else PlainFormatter())
    return handler


# --- audit log ----------------------------------------------------------------------------------

def default_logs_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """``$LOGS_DIRECTORY`` (systemd ``LogsDirectory=``; first entry if several), else None."""
    environ = os.environ if environ is None else environ
    value = environ.get("LOGS_DIRECTORY", "")
    return Path(value.split(":")[0]) if value else None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)  # money stays exact, as in the ledger
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (Path, _dt.datetime, _dt.date)):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return repr(obj)


def audit(event: str, **fields: Any) -> None:
    """Append one JSON object to the audit log: ``{"ts": ISO UTC, "event": ..., **fields}``.

    For orders and fills (``audit("order", client_id=..., symbol=..., side=..., amount=Decimal(..))``).
    Decimals are written as strings. A no-op until :func:`setup_logging` was given a logs directory.
    """
    logger = logging.getLogger(AUDIT_LOGGER)
    if not logger.isEnabledFor(logging.INFO):
        return
    now = _dt.datetime.now(_dt.timezone.utc)
    doc = {"ts": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z", "event": event, **fields}
    logger.info("%s", json.dumps(doc, default=_json_default, separators=(",", ":"), ensure_ascii=False))


class _AuditFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # One physical line per event, whatever a field contained.
        return record.getMessage().replace("\n", "\\n")


def _audit_handler(logs_dir: Path, max_kb: int, backups: int) -> logging.Handler:
    logs_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(logs_dir / AUDIT_FILE, maxBytes=max_kb * 1024,
                                                   backupCount=backups, encoding="utf-8")
    handler.setFormatter(_AuditFormatter())
    return handler


# --- setup --------------------------------------------------------------------------------------

def setup_logging(level: str = "INFO", logs_dir: Path | None = None, audit_max_kb: int = 1024,
                  audit_backups: int = 5, *, stream: IO[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> str:
    """Install the console handler and the audit log; returns the console mode.

    Safe to call again (a reload with a new level): it replaces the handlers it installed before.
    ``logs_dir`` defaults to ``$LOGS_DIRECTORY``; without either there is no audit file. If the
    audit file cannot be opened, that is logged as an error and the service keeps running.
    """
    stream = sys.stderr if stream is None else stream
    environ = os.environ if environ is None else environ
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")

    root = logging.getLogger()
    audit_logger = logging.getLogger(AUDIT_LOGGER)
    teardown_logging()

    redactor = RedactSecrets()
    mode = output_mode(stream, environ)
    console = _console_handler(mode, stream)
    console.addFilter(redactor)
    root.addHandler(console)
    root.setLevel(numeric)
    _installed.append(console)
    for name, floor in _QUIET.items():
        logging.getLogger(name).setLevel(max(floor, numeric))
    logging.captureWarnings(True)

    audit_logger.propagate = False  # JSON lines belong in the file, not in the journal
    audit_logger.setLevel(logging.INFO)
    logs_dir = Path(logs_dir) if logs_dir is not None else default_logs_dir(environ)
    if logs_dir is not None:
        try:
            handler = _audit_handler(logs_dir, audit_max_kb, audit_backups)
        except OSError as exc:
            logging.getLogger(__name__).error("audit log disabled: cannot open %s: %s",
                                              logs_dir / AUDIT_FILE, exc.strerror or exc)
        else:
            handler.addFilter(redactor)
            audit_logger.addHandler(handler)
            _installed.append(handler)
    if not audit_logger.handlers:
        audit_logger.addHandler(logging.NullHandler())
    return mode


def audit_path() -> Path | None:
    """Where audit events currently go (for `pitrader status` / doctor), or None."""
    for h in logging.getLogger(AUDIT_LOGGER).handlers:
        if isinstance(h, logging.handlers.RotatingFileHandler):
            return Path(h.baseFilename)
    return None


def teardown_logging() -> None:
    """Remove and close the handlers :func:`setup_logging` installed (flushes the audit file)."""
    for h in _installed:
        for lg in (logging.getLogger(), logging.getLogger(AUDIT_LOGGER)):
            if h in lg.handlers:
                lg.removeHandler(h)
        h.close()
    _installed.clear()
