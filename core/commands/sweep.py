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

NAME = "sweep"
HELP = "search strategy/risk parameters by backtest (Optuna; local processes or a Dask cluster; resumable)"
EX_UNAVAILABLE = 69


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
    from core.exchange.replay import DataError
    from core.research.cli import (EX_DATAERR, EX_FAILED, EX_INTERRUPTED, TrialProgress, fail, prepare, render_sweep,
                                   sweep_json)
    from core.research.sweep import run_sweep

    require(None)  # an unwritable numba cache: one line, exit 77
    setup = prepare(NAME, args, ctx, default_trials=50)
    if isinstance(setup, int):
        return setup
    spec, workers = setup.spec, setup.workers
    show = not args.json and ctx.console.is_terminal
    try:
        with TrialProgress(ctx.console, show, spec.objective) as bar:
            bar.label("trials" + (f" on {args.cluster}" if args.cluster else f" ({workers.size} workers)"))
            res = run_sweep(spec, workers, bar)
    except KeyboardInterrupt:
        workers.close(cancel=True)
        return fail(NAME, EX_INTERRUPTED, f"interrupted: finished trials are stored in {spec.study_path}; "
                                          "run the same command again to continue")
    except DataError as exc:
        workers.close(cancel=True)
        return fail(NAME, EX_DATAERR, f"data: {exc}")
    except BaseException:  # a bug: stop the workers, then the CLI reports it (exit 70)
        workers.close(cancel=True)
        raise
    workers.close()
    if args.json:
        print(json.dumps(sweep_json(res, max(args.top, 0))))
    else:
        render_sweep(ctx.console, res, max(args.top, 1))
    return 0 if res.best is not None else EX_FAILED
