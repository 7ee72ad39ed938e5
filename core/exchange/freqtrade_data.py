"""freqtrade's OHLCV files (``BTC_USDT-1h.json``, ``.json.gz``) for replays and backtests.

Many users already have years of candles downloaded by ``freqtrade download-data``; reading them
spares a second download. freqtrade's ``json`` format is a list of ``[open time ms, open, high,
low, close, volume]`` rows (``jsongz``: the same, gzipped). Its ``feather`` and ``parquet``
formats need pyarrow, which is not a runtime dependency of pitrader: such files are reported
(with the freqtrade command that converts them), never silently skipped.

This module only finds and parses; the caller (``core.exchange.replay``) checks every row like
a CSV's. Errors are ``ValueError`` whose text names the file and the row.
"""
from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from pathlib import Path

import numpy as np

# spot files only: BASE_QUOTE-<tf>.<ext>; futures files carry a settle currency and a suffix
# (BTC_USDT_USDT-1h-futures.feather) and are not spot prices
NAME = re.compile(r"^(?P<base>[A-Za-z0-9]+)_(?P<quote>[A-Za-z0-9]+)-(?P<tf>\d+[smhdwM])\."
                  r"(?P<ext>json|json\.gz|feather|parquet)$")
READABLE = ("json", "json.gz")
NEEDS_PYARROW = ("feather", "parquet")
MAX_FILE_BYTES = 1 << 30  # a decompressed file: 10 years of 1m candles is ~350 MB


def find(folder: Path, timeframe: str) -> tuple[dict[str, Path], list[Path]]:
    """(symbol -> readable file of ``timeframe``, files of that timeframe that need pyarrow)."""
    readable: dict[str, Path] = {}
    unreadable: list[Path] = []
    for path in sorted(folder.iterdir()):
        m = NAME.match(path.name)
        if m is None or m["tf"] != timeframe or not path.is_file():
            continue
        symbol = f"{m['base'].upper()}/{m['quote'].upper()}"
        if m["ext"] in READABLE:
            if symbol not in readable or m["ext"] == "json":  # both present: the plain one
                readable[symbol] = path
        else:
            unreadable.append(path)
    return readable, unreadable


def pyarrow_hint(files: list[Path]) -> str:
    kinds = sorted({f.name.rsplit(".", 1)[1] for f in files})
    return (f"{len(files)} freqtrade {'/'.join(kinds)} file(s) (e.g. {files[0].name}) need pyarrow, which "
            "pitrader does not use; convert them once with `freqtrade convert-data --format-from "
            f"{kinds[0]} --format-to json --datadir {files[0].parent}`")


def load(path: Path) -> np.ndarray:
    """The file's rows as a float64 (n, 6) array; raises ValueError naming the file and row."""
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as fh:
                raw = fh.read(MAX_FILE_BYTES + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: not a readable gzip file ({exc.__class__.__name__})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ValueError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB")
    try:
        rows = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: expected UTF-8 JSON, got a byte 0x{raw[exc.start]:02x} at offset "
                         f"{exc.start}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: expected freqtrade JSON ({exc.msg})") from None
    except RecursionError:
        raise ValueError(f"{path}: expected a list of [time, open, high, low, close, volume] rows") from None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a list of [time, open, high, low, close, volume] rows "
                         f"(freqtrade's json format), got a {type(rows).__name__}")
    out = np.empty((len(rows), 6), dtype=np.float64)
    for i, row in enumerate(rows):
        if (not isinstance(row, list) or len(row) != 6
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in row)):
            raise ValueError(f"{path}: row {i + 1}: expected [time ms, open, high, low, close, volume], "
                             f"got {json.dumps(row)[:60]}")
        try:
            out[i] = row
        except OverflowError:
            raise ValueError(f"{path}: row {i + 1}: a number too large") from None
    return out
