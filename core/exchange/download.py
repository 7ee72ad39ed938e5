"""Historical candles from the exchange into the CSV files the backtest reads.

Layout and format: ``DIR/<timeframe>/BASE_QUOTE.csv`` with the header
``timestamp_ms,open,high,low,close,volume`` (candle open time in UTC ms; closed candles only),
the same as ``../shared/data/ohlcv`` and ``ReplayGateway``.

Resumable: an existing file is continued after its last candle, so running the same command
again (after an interruption, or a week later) fetches only what is new. Earlier history than
the file holds is not prepended (start a new DIR for that).

Atomic: every page (up to ``page`` candles) is committed by writing the file's new version to a
temporary file beside it, fsync, and renaming it over the old one. An interrupted download
leaves the file as of its last committed page, never half a line.

Polite: requests go through the gateway (``core.exchange.ccxt_gateway``), which keeps inside the
exchange's request-weight budget and retries short hiccups itself. On top of that a page that
still fails with a rate limit waits the exchange's ``Retry-After``, and one that fails with a
network error or 5xx backs off and tries again, up to ``attempts`` times; then the pair is
reported as failed (what was downloaded stays) and the other pairs go on. An IP ban (HTTP 418)
stops the whole download: hammering on would lengthen it.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

import numpy as np

from core.exchange.gateway import GatewayError, RateLimited, TemporaryError

from core.timeframes import timeframe_ms
from core.exchange.replay import HEADER

log = logging.getLogger(__name__)

PAGE = 1000  # Binance's klines maximum per request
ATTEMPTS = 6
SYMBOL = re.compile(r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}$")


class DownloadError(Exception):
    """A pair (or the whole download) cannot continue; the message says why and what to do."""


class Banned(DownloadError):
    """The exchange banned us (HTTP 418): stop everything."""


def parse_pairs(text: str) -> list[str]:
    """``"BTC/USDT, eth/usdt"`` -> ``["BTC/USDT", "ETH/USDT"]``; raises ValueError naming a bad entry."""
    out: list[str] = []
    for raw in text.split(","):
        sym = raw.strip().upper()
        if not sym:
            continue
        if not SYMBOL.match(sym):
            raise ValueError(f"--pairs: expected BASE/QUOTE such as BTC/USDT, got {raw.strip()!r}")
        if sym not in out:
            out.append(sym)
    if not out:
        raise ValueError("--pairs: expected at least one pair, e.g. BTC/USDT,ETH/USDT")
    return out


def csv_path(root: Path, symbol: str, timeframe: str) -> Path:
    base, quote = symbol.split("/")
    return Path(root) / timeframe / f"{base}_{quote}.csv"


def _num(v: float) -> str:
    s = repr(float(v))
    return s[:-2] if s.endswith(".0") else s


def format_rows(rows: np.ndarray) -> str:
    return "".join(f"{int(r[0])},{_num(r[1])},{_num(r[2])},{_num(r[3])},{_num(r[4])},{_num(r[5])}\n" for r in rows)


def last_timestamp(path: Path) -> int | None:
    """The newest candle's open time in an existing CSV (None: no candles yet); checks the header."""
    with open(path, "rb") as f:
        head = f.readline().decode("utf-8", "replace").strip()
        if head != HEADER:
            raise DownloadError(f"{path}: header: expected '{HEADER}', got '{head[:60]}'; "
                                "move the file away or pick another DIR")
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 4096))
        tail = f.read().decode("utf-8", "replace")
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    if not last or last.strip() == HEADER:
        return None
    try:
        return int(last.split(",", 1)[0])
    except ValueError:
        raise DownloadError(f"{path}: last line: expected a timestamp_ms, got '{last[:40]}'") from None


def commit(path: Path, rows: np.ndarray) -> None:
    """Append ``rows`` to ``path`` atomically: the old file plus the rows become the new file at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    try:
        if path.exists():
            shutil.copyfile(path, tmp)
        else:
            tmp.write_text(HEADER + "\n")
        with open(tmp, "a", encoding="utf-8") as f:
            f.write(format_rows(rows))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


@dataclass
class PairResult:
    symbol: str
    path: Path
    had: int | None  # newest candle already in the file before this run
    added: int = 0
    last_ms: int | None = None
    error: str | None = None


Wait = Callable[[str, float], None]  # (why, seconds) -> tell the user


async def fetch_page(gateway, symbol: str, timeframe: str, since_ms: int, limit: int, *, attempts: int = ATTEMPTS,
                     sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                     on_wait: Wait | None = None) -> np.ndarray:
    """One page of closed candles from ``since_ms``, waiting out rate limits and retrying temporary errors."""
    for attempt in range(attempts):
        try:
            return await gateway.fetch_ohlcv(symbol, timeframe, since_ms, limit)
        except RateLimited as exc:
            if exc.banned:
                raise Banned(f"the exchange banned this IP for {exc.retry_after_s:.0f} s (HTTP 418, too many "
                             "requests); run the same command after that: it resumes where it stopped") from None
            wait, why = max(exc.retry_after_s, 1.0), f"rate limited by the exchange ({exc})"
            error: GatewayError = exc
        except TemporaryError as exc:
            wait = float(getattr(exc, "retry_after_s", 0) or min(30.0, 2.0 ** attempt))
            why, error = f"{exc}", exc
        except GatewayError as exc:
            raise DownloadError(str(exc)) from None
        if attempt == attempts - 1:
            raise DownloadError(f"{error} (gave up after {attempts} attempts; run the same command again to resume)")
        log.info("%s: %s; retrying in %.0f s", symbol, why, wait)
        if on_wait is not None:
            on_wait(f"{symbol}: {why}", wait)
        await sleep(wait)
    raise AssertionError("unreachable")


async def download_pair(gateway, symbol: str, timeframe: str, since_ms: int, root: Path, *, until_ms: int | None = None,
                        page: int = PAGE, attempts: int = ATTEMPTS, on_rows: Callable[[str, int, int], None] | None = None,
                        on_wait: Wait | None = None, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                        ) -> PairResult:
    """Fetch ``symbol`` from ``since_ms`` (or after the file's last candle) until ``until_ms`` (or the
    newest closed candle), committing each page. ``on_rows(symbol, added, last_ms)`` after each page."""
    tf_ms = timeframe_ms(timeframe)
    path = csv_path(root, symbol, timeframe)
    try:
        had = last_timestamp(path) if path.exists() else None
    except (DownloadError, OSError) as exc:
        return PairResult(symbol, path, None, error=str(exc))
    result = PairResult(symbol, path, had, last_ms=had)
    since = since_ms - since_ms % tf_ms
    if had is not None:
        since = max(since, had + tf_ms)
    while until_ms is None or since + tf_ms <= until_ms:
        try:
            rows = await fetch_page(gateway, symbol, timeframe, since, page, attempts=attempts, sleep=sleep,
                                    on_wait=on_wait)
        except Banned:
            raise
        except DownloadError as exc:
            result.error = str(exc)
            return result
        if len(rows):
            rows = rows[rows[:, 0] >= since]
        if until_ms is not None and len(rows):
            rows = rows[rows[:, 0] + tf_ms <= until_ms]
        if not len(rows):
            break  # nothing newer has closed (or the exchange has no more)
        commit(path, rows)
        result.added += len(rows)
        result.last_ms = int(rows[-1, 0])
        since = result.last_ms + tf_ms
        if on_rows is not None:
            on_rows(symbol, len(rows), result.last_ms)
    return result


async def download(gateway, pairs: list[str], timeframe: str, since_ms: int, root: Path, *,
                   until_ms: int | None = None, page: int = PAGE, concurrency: int = 4, attempts: int = ATTEMPTS,
                   on_rows: Callable[[str, int, int], None] | None = None, on_wait: Wait | None = None,
                   sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> list[PairResult]:
    """Every pair, ``concurrency`` at a time. A pair's failure is in its result; a ban (``Banned``)
    cancels the rest and is raised (committed pages stay, so the same command resumes)."""
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(sym: str) -> PairResult:
        async with sem:
            return await download_pair(gateway, sym, timeframe, since_ms, root, until_ms=until_ms, page=page,
                                       attempts=attempts, on_rows=on_rows, on_wait=on_wait, sleep=sleep)

    tasks = [asyncio.create_task(one(s)) for s in pairs]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return [t.result() for t in tasks]
