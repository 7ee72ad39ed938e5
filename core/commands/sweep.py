"""`pitrader sweep --data DIR --space FILE`: search strategy and risk parameters by backtest (Optuna TPE).

Needs the research extra (Optuna, Dask distributed); without it this prints one line and exits
69. The trials run in local worker processes, or on a Dask cluster with ``--cluster``; the
study lives in SQLite, so an interrupted sweep continues when the same command is run again.
Exit codes: see ``core.research.cli`` (0 done, 1 no trial completed, 2 usage, 65 bad data,
66 space file missing, 69 research extra missing or cluster unreachable, 78 bad space file or
config, 130 interrupted).
"""
from __future__ import annotations

import json

from core.exitcodes import EX_FAILED, EX_UNAVAILABLE

NAME = "sweep"
HELP = "search strategy/risk parameters by backtest (Optuna; local processes or a Dask cluster; resumable)"


def configure(p) -> None:
    from core.research.cli import add_options

    add_options(p, "trials in total (default 50); asking for more later continues the same study")
    p.add_argument("--top", type=int, default=5, metavar="N", help="best trials to show (default 5)")


def run(args, ctx) -> int:
    from core.research.cli import missing_extra

    problem = missing_extra(NAME)
    if problem:
        print(problem)
        return EX_UNAVAILABLE
    from core.commands._storage import require
    from core.research.cli import TrialProgress, prepare, render_sweep, run_trials, sweep_json
    from core.research.sweep import run_sweep

    require(None)  # an unwritable numba cache: one line, exit 77
    setup = prepare(NAME, args, ctx, default_trials=50)
    if isinstance(setup, int):
        return setup
    spec, workers = setup.spec, setup.workers
    show = not args.json and ctx.console.is_terminal

    def trials():
        with TrialProgress(ctx.console, show, spec.objective) as bar:
            bar.label("trials" + (f" on {args.cluster}" if args.cluster else f" ({workers.size} workers)"))
            return run_sweep(spec, workers, bar)

    res = run_trials(NAME, setup, trials)
    if isinstance(res, int):
        return res
    if args.json:
        print(json.dumps(sweep_json(res, max(args.top, 0))))
    else:
        render_sweep(ctx.console, res, max(args.top, 1))
    return 0 if res.best is not None else EX_FAILED
