"""`pitrader validate --data DIR --space FILE`: walk-forward validation of the sweep's choice.

Splits the data into train/test windows (rolling, or ``--anchored``), picks parameters on each
train window with the sweep (same code, seeds and study file), runs them on the following test
window, and reports in-sample vs out-of-sample per window, the stitched out-of-sample equity and
a verdict. Needs the research extra (exit 69 without it). Exit codes as `pitrader sweep`
(``core.research.cli``); 2 also when the windows do not fit the data.
"""
from __future__ import annotations

import json

from core.exitcodes import EX_DATAERR, EX_FAILED, EX_UNAVAILABLE, EX_USAGE

NAME = "validate"
HELP = "walk-forward: choose parameters on train windows by sweep, judge them on the following test windows"


def configure(p) -> None:
    from core.research.cli import add_options

    add_options(p, "trials per train window (default 30)")
    p.add_argument("--windows", type=int, metavar="N", help="train/test windows (default 4 without day counts; "
                   "with them, as many as fit, the latest N if given)")
    p.add_argument("--train-days", type=float, metavar="D", help="train window length in days (default: 3x test)")
    p.add_argument("--test-days", type=float, metavar="D", help="test window length in days")
    p.add_argument("--anchored", action="store_true", help="every train window starts at the first candle "
                   "(growing) instead of rolling forward")


def _span(spec) -> tuple[int, int, int]:
    """First usable cycle (after the backtest's default warm-up, or --from) and the data's end."""
    from core.clock import VirtualClock
    from core.exchange.replay import ReplayGateway
    from core.exchange.setup import REPLAY_WARMUP_CANDLES
    from core.backtest.runner import data_folder
    from core.timeframes import timeframe_ms

    tf_ms = timeframe_ms(spec.timeframe)
    gw = ReplayGateway(data_folder(spec.data, spec.timeframe), VirtualClock(0), timeframe=spec.timeframe)
    first = gw.start_ms + REPLAY_WARMUP_CANDLES * tf_ms
    if spec.start_ms is not None:
        first = max(spec.start_ms, gw.start_ms + tf_ms)
    first = -(-first // tf_ms) * tf_ms
    last = gw.end_ms if spec.end_ms is None else min(spec.end_ms, gw.end_ms)
    return first, last // tf_ms * tf_ms, tf_ms


def run(args, ctx) -> int:
    from core.research.cli import missing_extra

    problem = missing_extra(NAME)
    if problem:
        print(problem)
        return EX_UNAVAILABLE
    from core.commands._storage import require
    from core.exchange.replay import DataError
    from core.research.cli import TrialProgress, fail, prepare, render_validation, run_trials, validate_json
    from core.research.walkforward import WindowError, plan_windows, run_validation

    require(None)
    setup = prepare(NAME, args, ctx, default_trials=30)
    if isinstance(setup, int):
        return setup
    spec, workers = setup.spec, setup.workers
    try:
        first, last, tf_ms = _span(spec)
        plan = plan_windows(first, last, tf_ms, args.windows, args.train_days, args.test_days, args.anchored)
    except WindowError as exc:
        workers.close()
        return fail(NAME, EX_USAGE, str(exc))
    except DataError as exc:
        workers.close()
        return fail(NAME, EX_DATAERR, f"data: {exc}")
    show = not args.json and ctx.console.is_terminal

    def trials():
        with TrialProgress(ctx.console, show, spec.objective) as bar:
            def on_window(w, phase):
                bar.label(f"window {w.index + 1}/{len(plan)} {phase}")
            return run_validation(spec, plan, workers, args.anchored, on_window, bar)

    v = run_trials(NAME, setup, trials)
    if isinstance(v, int):
        return v
    if args.json:
        print(json.dumps(validate_json(v, spec)))
    else:
        render_validation(ctx.console, v)
    return 0 if v.verdict != "none" else EX_FAILED
