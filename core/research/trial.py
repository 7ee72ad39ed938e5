"""One trial: a parameter set -> one backtest -> the objective and the headline figures.

This runs in worker processes (local or on Dask workers), so it imports neither Optuna nor
Dask. The figures are the backtest report's own (``core.backtest.report.to_json``), never
recomputed; ``calmar`` and ``expectancy`` are derived from them when the report does not carry
them itself:

- calmar = annualised return (compounded over the backtest's span) / max drawdown;
- expectancy = average PnL per trade as a fraction of the starting equity.

A ratio the report leaves undefined (Sharpe of a flat curve, profit factor without a loss,
Calmar without a drawdown) makes the trial fail with that reason rather than score it.

Candle data reaches a worker once: a local worker reads ``--data`` itself; a cluster worker
gets a ``Bundle`` (the files' bytes, scattered to every worker once) and writes it to a scratch
folder the first time it sees it. Either way each worker parses each CSV once (``worker_setup``
memoises the replay gateway's CSV reader in that process), so trials cost a backtest, not a load.
"""
from __future__ import annotations

import asyncio
import atexit
import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.research.space import apply
from core.timeframes import YEAR_MS

OBJECTIVES = ("sharpe", "sortino", "calmar", "profit_factor", "return", "expectancy")
# figures kept per trial (report keys, plus the derived objectives)
METRICS = ("return", "sharpe", "sortino", "calmar", "profit_factor", "expectancy", "trades", "win_rate",
           "max_drawdown", "exposure", "pnl")


@dataclass(frozen=True)
class Task:
    """What a worker needs for one backtest (plain data: it is pickled to the worker)."""

    index: int
    base: dict[str, Any]  # the config as a dict (config.json shape)
    values: dict[str, Any]  # dotted keys set for this trial (fixed + searched)
    objective: str
    start_ms: int | None = None
    end_ms: int | None = None
    timeframe: str | None = None
    curve: bool = False  # also return the equity curve (walk-forward test windows)


@dataclass(frozen=True)
class Bundle:
    """The candle files of a --data folder, shipped to cluster workers once."""

    key: str  # content digest: a worker that has it on disk already reuses it
    files: dict[str, bytes] = field(repr=False)


def data_folder_files(data: Path, timeframe: str) -> list[Path]:
    """The files the replay gateway reads for ``timeframe``: candles and markets.json."""
    data = Path(data)
    folder = data / timeframe if (data / timeframe).is_dir() else data
    files = [p for p in sorted(folder.iterdir()) if p.is_file()]
    if folder != data and (data / "markets.json").is_file():
        files.append(data / "markets.json")
    return files


def make_bundle(data: Path, timeframe: str) -> Bundle:
    files = {str(p.relative_to(data)): p.read_bytes() for p in data_folder_files(data, timeframe)}
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return Bundle(digest.hexdigest()[:16], files)


_MATERIALISED: dict[str, Path] = {}


def _materialise(bundle: Bundle) -> Path:
    """The bundle as a folder on this worker, written once per process."""
    path = _MATERIALISED.get(bundle.key)
    if path is None:
        path = Path(tempfile.mkdtemp(prefix=f"pitrader-data-{bundle.key}-"))
        atexit.register(shutil.rmtree, path, True)
        for name, blob in bundle.files.items():
            target = path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blob)
        _MATERIALISED[bundle.key] = path
    return path


def worker_setup() -> None:
    """Once per worker process: serial indicators, quiet logs, and each candle file parsed once.

    Worker processes are the parallelism (one per core), so the indicators' own thread pool
    would only oversubscribe the cores. The backtest builds a fresh replay gateway per run;
    memoising its CSV reader (keyed by path, size and mtime; the arrays made read-only) turns a
    ~2 s reload of 126 pairs into nothing."""
    import core.indicators

    core.indicators.THREADS = 1
    logging.getLogger("core").setLevel(logging.ERROR)  # halts are results here, not warnings
    logging.getLogger("strategies").setLevel(logging.ERROR)
    from core.exchange import replay

    if getattr(replay.load_csv, "memoised", False):
        return
    original, memo = replay.load_csv, {}

    def load_csv(path, tf_ms):
        st = os.stat(path)
        key = (str(path), tf_ms, st.st_size, st.st_mtime_ns)
        arr = memo.get(key)
        if arr is None:
            arr = original(path, tf_ms)
            arr.setflags(write=False)
            memo[key] = arr
        return arr

    load_csv.memoised = True  # type: ignore[attr-defined]
    replay.load_csv = load_csv


def pool_initializer() -> None:
    """Local worker processes: Ctrl-C is left to the parent (it stops the sweep; finished trials
    are already stored), then ``worker_setup``."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker_setup()


def objective_value(doc: dict[str, Any], objective: str) -> float | None:
    if objective in doc and doc[objective] is not None and objective not in ("calmar", "expectancy"):
        return float(doc[objective])
    if objective == "calmar":
        if doc.get("calmar") is not None:
            return float(doc["calmar"])
        from core.backtest.runner import parse_date

        span = parse_date(doc["to"], "to") - parse_date(doc["from"], "from")
        mdd, ret = doc.get("max_drawdown") or 0.0, doc["return"]
        if span <= 0 or mdd <= 0 or ret <= -1:
            return None
        return ((1 + ret) ** (YEAR_MS / span) - 1) / mdd
    if objective == "expectancy":
        if doc.get("expectancy") is not None:
            return float(doc["expectancy"])
        if not doc.get("trades") or doc.get("avg_pnl") is None or not doc.get("start_equity"):
            return None
        return doc["avg_pnl"] / doc["start_equity"]
    return None


def run_trial(task: Task, data: str | Path | Bundle) -> dict[str, Any]:
    """Run one backtest. Returns {"index", "state": "ok"|"fail", "value", "metrics", "error", "curve"}.

    A configuration the config checks refuse, or a range without candles, is a failed trial (its
    reason in ``error``); bad data raises (every trial would fail the same way)."""
    from core.backtest.report import to_json
    from core.backtest.runner import BacktestError, BacktestSpec, run_backtest
    from core.config import ConfigError, config_from_dict

    folder = _materialise(data) if isinstance(data, Bundle) else Path(data)
    out: dict[str, Any] = {"index": task.index, "state": "fail", "value": None, "metrics": {}, "error": None,
                           "curve": None}
    try:
        cfg = config_from_dict(apply(task.base, task.values), "<trial>")
    except ConfigError as exc:
        out["error"] = f"config refused: {exc.key}: {exc.expected}"
        return out
    spec = BacktestSpec(data=folder, timeframe=task.timeframe, start_ms=task.start_ms, end_ms=task.end_ms, verify=0)
    try:
        result = asyncio.run(run_backtest(cfg, spec))
    except BacktestError as exc:
        out["error"] = str(exc)
        return out
    doc = to_json(result)
    metrics = {k: doc.get(k) for k in METRICS}
    metrics["calmar"] = objective_value(doc, "calmar")
    metrics["expectancy"] = objective_value(doc, "expectancy")
    metrics["halts"] = len(doc.get("halts", []))
    out["metrics"] = metrics
    if task.curve:
        out["curve"] = [(int(ts), float(eq)) for ts, eq in result.curve]
        out["start_equity"] = doc["start_equity"]
    value = objective_value(doc, task.objective)
    if value is None:
        out["error"] = f"{task.objective} undefined ({doc['trades']} trades, max drawdown {doc['max_drawdown']:.2%})"
        return out
    out["state"], out["value"] = "ok", value
    return out


def worker_trial(task: Task, data: str | Path | Bundle) -> dict[str, Any]:
    """The function executors submit: set the worker up (idempotent), then run the trial."""
    worker_setup()
    return run_trial(task, data)
