"""Walk-forward validation: choose parameters on a past window, judge them on the next one.

The data is cut into windows of ``train`` then ``test`` days. Rolling windows slide forward by
the test length (each train window has the same length); anchored ones all start at the first
usable candle (the train window grows). On each train window the sweep (``core.research.sweep``,
the same code and seeding) picks the best parameters by the objective; they then run once,
unchanged, on the following test window. In-sample figures are what the sweep saw; out-of-sample
figures are what those parameters did on candles the search never saw. The test windows'
equity curves are chained (each starts from the previous one's end) into the stitched
out-of-sample equity -- the one curve that approximates trading the method live.

Each window's sweep is its own study in the same SQLite file (its name includes the window),
so an interrupted validation resumes like a sweep.
"""
from __future__ import annotations

import concurrent.futures as cf
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Callable

from core.research.sweep import SweepResult, SweepSpec, Workers, run_sweep, task_for
from core.timeframes import DAY_MS


class WindowError(ValueError):
    """The requested windows do not fit the data; ``str()`` is one line."""


@dataclass(frozen=True)
class Window:
    index: int
    train_start: int  # ms; half-open [start, end)
    train_end: int
    test_start: int
    test_end: int


def plan_windows(first_ms: int, last_ms: int, tf_ms: int, windows: int | None, train_days: float | None,
                 test_days: float | None, anchored: bool) -> list[Window]:
    """Windows over [first_ms, last_ms). Without day counts: ``windows`` (default 4) test windows
    with a train window three times as long. With day counts: as many windows as fit (at most
    ``windows``), the latest ones when fewer are asked for."""
    span = last_ms - first_ms
    if windows is not None and windows < 1:
        raise WindowError("--windows: expected 1 or more")
    if train_days is None and test_days is None:
        n = windows or 4
        test = span // (n + 3) // tf_ms * tf_ms
        train = 3 * test
    else:
        if train_days is None or test_days is None:
            raise WindowError("--train-days and --test-days go together")
        if train_days <= 0 or test_days <= 0:
            raise WindowError("--train-days, --test-days: expected more than 0 days")
        train, test = int(train_days * DAY_MS) // tf_ms * tf_ms, int(test_days * DAY_MS) // tf_ms * tf_ms
        fit = (span - train) // test if test > 0 else 0
        n = min(windows, fit) if windows else fit
    if test < tf_ms or train < tf_ms or n < 1 or train + n * test > span:
        days = span / DAY_MS
        raise WindowError(f"the data's usable span ({days:.1f} days after warm-up) does not hold "
                          f"{'a train and a test window' if n < 1 else f'{n} windows'} of these lengths")
    # align the last test window with the end of the data (the most recent market matters most)
    offset = first_ms + (span - train - n * test)
    out = []
    for i in range(n):
        test_start = offset + train + i * test
        train_start = first_ms if anchored else test_start - train
        out.append(Window(i, train_start, test_start, test_start, test_start + test))
    return out


@dataclass
class WindowResult:
    window: Window
    sweep: SweepResult
    params: dict[str, Any] | None  # the chosen parameters (None: no train trial completed)
    in_sample: dict[str, Any] | None  # the chosen trial's figures on the train window
    out_of_sample: dict[str, Any] | None  # the same parameters on the test window
    oos_value: float | None = None  # objective out of sample (None: undefined there)
    oos_error: str | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)  # test window equity, start = 1.0


@dataclass
class Validation:
    objective: str
    anchored: bool
    windows: list[WindowResult]
    stitched: list[tuple[int, float]]  # chained out-of-sample equity, starting at 1.0
    stitched_stats: dict[str, Any]
    verdict: str  # holds | overfit | no_edge | none
    verdict_text: str


def stitch(curves: list[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    """Chain normalised equity curves (each starting at 1.0) into one, compounding."""
    out: list[tuple[int, float]] = []
    level = 1.0
    for curve in curves:
        for ts, eq in curve:
            out.append((ts, level * eq))
        if curve:
            level *= curve[-1][1]
    return out


def curve_stats(points: list[tuple[int, float]]) -> dict[str, Any]:
    """Return, max drawdown and Sharpe of a stitched curve (``core.trading.stats`` definitions)."""
    from core.trading.stats import drawdown, sharpe_sortino

    if not points:
        return {"return": None, "max_drawdown": None, "max_drawdown_duration_s": None, "sharpe": None,
                "sortino": None}
    dec = [(ts, Decimal(repr(v))) for ts, v in points]
    mdd, mdd_ms = drawdown([(dec[0][0], Decimal(1))] + dec)
    sharpe, sortino = sharpe_sortino(dec)
    return {"return": points[-1][1] - 1.0, "max_drawdown": mdd, "max_drawdown_duration_s": mdd_ms / 1000,
            "sharpe": sharpe, "sortino": sortino}


def verdict(objective: str, results: list[WindowResult], stitched_return: float | None) -> tuple[str, str]:
    chosen = [w for w in results if w.params is not None]
    if not chosen or stitched_return is None:
        return "none", "no verdict: no train window found a parameter set with a defined objective"
    n = len(results)
    positive = sum(1 for w in chosen if w.out_of_sample and (w.out_of_sample.get("return") or 0) > 0)
    is_vals = [w.sweep.best.value for w in chosen if w.sweep.best]
    is_mean = sum(is_vals) / len(is_vals)
    oos_vals = [w.oos_value for w in chosen if w.oos_value is not None]
    oos_mean = sum(oos_vals) / len(oos_vals) if oos_vals else None
    def show(x: float) -> str:
        return f"{x:+.2%}" if objective in ("return", "expectancy") else f"{x:+.3g}"

    oos_text = show(oos_mean) if oos_mean is not None else "undefined"
    figures = (f"in-sample {objective} {show(is_mean)} on average, out-of-sample {oos_text}; "
               f"out-of-sample return {stitched_return:+.1%} stitched, positive in {positive} of {n} windows")
    if stitched_return > 0 and 2 * positive >= n:
        return "holds", f"HOLDS UP out of sample: {figures}"
    if is_mean > 0:
        return "overfit", f"OVERFIT: what looked good in sample did not carry out of sample: {figures}"
    return "no_edge", f"NO EDGE: even the best parameters in sample did not make money: {figures}"


OnWindow = Callable[[Window, str], None]  # (window, phase: "train" | "test" | "done")


def run_validation(spec: SweepSpec, plan: list[Window], workers: Workers, anchored: bool,
                   on_window: OnWindow | None = None, on_result=None) -> Validation:
    """Sweep each train window, run the winner on its test window, stitch and judge."""
    results: list[WindowResult] = []
    for w in plan:
        if on_window:
            on_window(w, "train")
        wspec = replace(spec, start_ms=w.train_start, end_ms=w.train_end - 1)
        sweep = run_sweep(wspec, workers, on_result)
        best = sweep.best
        if best is None:
            results.append(WindowResult(w, sweep, None, None, None, oos_error="no train trial completed"))
            continue
        if on_window:
            on_window(w, "test")
        fut: cf.Future = workers.submit(task_for(spec, -1, best.params, curve=True, start_ms=w.test_start,
                                                 end_ms=w.test_end - 1))
        res = fut.result()
        start = res.get("start_equity") or 0.0
        curve = [(ts, eq / start) for ts, eq in (res["curve"] or [])] if start else []
        results.append(WindowResult(w, sweep, best.params, best.metrics, res["metrics"] or None,
                                    oos_value=res["value"], oos_error=res["error"], curve=curve))
        if on_window:
            on_window(w, "done")
    stitched = stitch([r.curve for r in results if r.curve])
    stats = curve_stats(stitched)
    kind, text = verdict(spec.objective, results, stats["return"])
    return Validation(spec.objective, anchored, results, stitched, stats, kind, text)
