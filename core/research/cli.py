"""Shared front end of `pitrader sweep` and `pitrader validate`: options, set-up, progress, tables, JSON.

Importable without the research extra (the commands' option parsers need it on a Pi, where
``pitrader --help`` must work): Optuna and Dask are imported inside the functions only.

Exit codes (both commands): 0 done; 1 no trial completed (every parameter set failed: see the
reasons); 2 bad arguments (dates, windows, counts); 65 bad candle data or --data not a folder;
66 the space file is missing or unreadable; 69 the research extra is not installed, or the
--cluster scheduler cannot be reached; 78 a bad space file or configuration (one line naming
the file and the key); 130 interrupted (finished trials are kept in the study: rerun the same
command to continue).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from core.exitcodes import EX_CONFIG, EX_DATAERR, EX_INTERRUPTED, EX_NOINPUT, EX_UNAVAILABLE, EX_USAGE
from core.timeframes import DAY_MS

OBJECTIVES = ("sharpe", "sortino", "calmar", "profit_factor", "return", "expectancy")
INSTALL_HINT = "pip install 'pitrader[research]' (./install.sh --dev installs it)"


def missing_extra(command: str) -> str | None:
    """The one line to print when Optuna or Dask is absent, else None."""
    try:
        import distributed  # noqa: F401
        import optuna  # noqa: F401
    except ImportError:
        return f"pitrader {command} needs the research extra: {INSTALL_HINT}"
    return None


def add_options(p, trials_help: str) -> None:
    p.add_argument("--data", metavar="DIR", required=True, help="recorded OHLCV, as for `pitrader backtest --data`")
    p.add_argument("--space", metavar="FILE", required=True,
                   help="JSON search space: dotted config keys with ranges or choices (research/spaces/example.json)")
    p.add_argument("--objective", choices=OBJECTIVES, default="sharpe",
                   help="what the search maximises, from the backtest report (default sharpe)")
    p.add_argument("--trials", type=int, metavar="N", help=trials_help)
    p.add_argument("--jobs", type=int, metavar="N", help="local worker processes (default: one per core)")
    p.add_argument("--cluster", metavar="ADDRESS", help="run the trials on a Dask cluster, e.g. tcp://10.0.0.5:8786 "
                   "(`dask scheduler` there, `dask worker ADDRESS` on each machine)")
    p.add_argument("--study", metavar="PATH.db", help="SQLite file of the Optuna studies (default: "
                   "<state dir>/research/studies.db); rerunning the same command resumes")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default 0): same data, space, config, seed "
                   "and batch give the same trials")
    p.add_argument("--batch", type=int, metavar="N", help="trials suggested per round (default 8, or the number of "
                   "workers if more); part of the study's identity, like the seed")
    p.add_argument("--timeframe", metavar="TF", help="signal timeframe (default: scanner.timeframes[0])")
    p.add_argument("--from", dest="start", metavar="DATE", help="first cycle (UTC date), as for backtest")
    p.add_argument("--to", dest="end", metavar="DATE", help="last cycle (UTC date), as for backtest")
    p.add_argument("--json", action="store_true", help="print one JSON object (no progress bar)")


def fail(command: str, code: int, message: str) -> int:
    print(f"pitrader {command}: {message}", file=sys.stderr)
    return code


@dataclass
class Setup:
    spec: Any  # SweepSpec
    workers: Any  # Workers


def prepare(command: str, args, ctx, default_trials: int) -> Setup | int:
    """Check the arguments, config and space; connect the workers. An int is an exit code (printed)."""
    from core.backtest.runner import BacktestError, parse_date
    from core.config import to_dict
    from core.research.space import SpaceError, load_space
    from core.research.sweep import DEFAULT_BATCH, ClusterUnavailable, SweepSpec, Workers

    cfg = ctx.config_or_defaults()
    trials = default_trials if args.trials is None else args.trials
    if trials < 1:
        return fail(command, EX_USAGE, "--trials: expected 1 or more")
    if args.jobs is not None and args.jobs < 1:
        return fail(command, EX_USAGE, "--jobs: expected 1 or more")
    if args.batch is not None and args.batch < 1:
        return fail(command, EX_USAGE, "--batch: expected 1 or more")
    try:
        start = parse_date(args.start, "--from") if args.start else None
        end = parse_date(args.end, "--to") if args.end else None
    except BacktestError as exc:
        return fail(command, EX_USAGE, str(exc))
    data = Path(args.data)
    if not data.is_dir():
        return fail(command, EX_DATAERR, f"--data {data}: expected a directory of OHLCV CSV files")
    base = to_dict(cfg)
    try:
        space = load_space(args.space, base)
    except SpaceError as exc:
        return fail(command, EX_NOINPUT if exc.missing else EX_CONFIG, str(exc))
    tf = args.timeframe or cfg.scanner.timeframes[0]
    study = Path(args.study) if args.study else ctx.state_dir / "research" / "studies.db"
    try:
        workers = Workers(data, tf, jobs=args.jobs, cluster=args.cluster)
    except ClusterUnavailable as exc:
        return fail(command, EX_UNAVAILABLE, str(exc))
    batch = args.batch or max(DEFAULT_BATCH, workers.size)
    spec = SweepSpec(data=data, space=space, base=base, objective=args.objective, trials=trials, study_path=study,
                     seed=args.seed, batch=batch, start_ms=start, end_ms=end, timeframe=tf)
    return Setup(spec, workers)


def run_trials(command: str, setup: Setup, trials: Callable[[], Any]) -> Any:
    """``trials()`` with the workers up, stopping them however it ends (cancelled unless it finished).

    Ctrl-C and bad data are exit codes (printed; an int is returned); a bug propagates to the CLI (exit 70)."""
    from core.exchange.replay import DataError

    workers = setup.workers
    try:
        out = trials()
    except KeyboardInterrupt:
        workers.close(cancel=True)
        return fail(command, EX_INTERRUPTED, f"interrupted: finished trials are stored in {setup.spec.study_path}; "
                                             "run the same command again to continue")
    except DataError as exc:
        workers.close(cancel=True)
        return fail(command, EX_DATAERR, f"data: {exc}")
    except BaseException:
        workers.close(cancel=True)
        raise
    workers.close()
    return out


class TrialProgress:
    """A rich bar: trials done / total and the best value so far (no-op when not on a terminal)."""

    def __init__(self, console, show: bool, objective: str) -> None:
        self.show, self.objective = show, objective
        if show:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.bar = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                TimeRemainingColumn(), console=console, transient=True)
            self.task = self.bar.add_task("trials", total=None, info="")

    def __enter__(self):
        if self.show:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.show:
            self.bar.__exit__(*exc)

    def label(self, text: str) -> None:
        if self.show:
            self.bar.update(self.task, description=text, completed=0, total=None, info="")

    def __call__(self, done: int, total: int, best, row) -> None:
        if self.show:
            info = f"best {self.objective} {best.value:.4g} (#{best.index})" if best else "no trial completed yet"
            self.bar.update(self.task, completed=done, total=total, info=info)


# --- output ----------------------------------------------------------------------------------------

def when(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def short_key(key: str) -> str:
    """``strategies.params.momentum.roc_period`` -> ``momentum.roc_period`` (column headings)."""
    parts = key.split(".")
    return ".".join(parts[-2:]) if len(parts) > 2 else key


def fmt(v: Any) -> str:
    from core.service.tables import num

    if isinstance(v, bool) or v is None or isinstance(v, (str, list, dict)):
        return json.dumps(v)
    return num(v, 6) if isinstance(v, float) else str(v)


def pct(v: float | None) -> str:
    return "-" if v is None else f"{v:+.2%}"


def trial_json(row) -> dict[str, Any]:
    return {"index": row.index, "state": row.state, "value": row.value, "params": row.params,
            "metrics": row.metrics, "error": row.error}


def sweep_json(res, top: int) -> dict[str, Any]:
    """``pitrader sweep --json`` (keys documented in README)."""
    s = res.spec
    best = res.best
    failed = [r for r in res.rows if r.state != "ok"]
    return {
        "objective": s.objective, "trials": s.trials, "completed": len(res.completed), "failed": len(failed),
        "ran": res.ran, "study": str(s.study_path), "study_name": s.study_name, "seed": s.seed, "batch": s.batch,
        "from": when(s.start_ms), "to": when(s.end_ms), "timeframe": s.timeframe, "fixed": s.space.fixed,
        "best": trial_json(best) if best else None, "top": [trial_json(r) for r in res.top(top)],
        "importance": res.importance, "importance_note": res.importance_note,
        "snippet": res.snippet(), "failures": failure_reasons(res.rows),
    }


def failure_reasons(rows) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        if r.state != "ok":
            out[r.error or "unknown"] = out.get(r.error or "unknown", 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def render_sweep(console, res, top: int) -> None:
    from rich.text import Text

    from core.service.tables import fit_table

    s = res.spec
    failed = [r for r in res.rows if r.state != "ok"]
    console.print(f"[bold]sweep[/] {s.objective}: {len(res.rows)} of {s.trials} trials "
                  f"({res.ran} run now, {len(res.rows) - res.ran} from the study), {len(failed)} failed  "
                  f"[dim]{s.study_path} :: {s.study_name}[/]")
    keys = [p.key for p in s.space.params]
    as_pct = s.objective in ("return", "expectancy")
    cols = [("#", {"justify": "right"}), (s.objective, {"justify": "right"})]
    cols += [] if s.objective == "return" else [("return", {"justify": "right"})]
    cols += [("trades", {"justify": "right"}), ("max DD", {"justify": "right"}), ("parameters", {})]
    rows = []
    for r in res.top(top):
        row = [str(r.index), pct(r.value) if as_pct else fmt(r.value)]
        row += [] if s.objective == "return" else [pct(r.metrics.get("return"))]
        row += [str(r.metrics.get("trades", "-")), pct(r.metrics.get("max_drawdown")).lstrip("+"),
                "  ".join(f"{short_key(k)}={fmt(r.params.get(k))}" for k in keys)]
        rows.append(row)
    if rows:
        console.print(fit_table(console, cols, rows, drop=["max DD", "trades"], wrap=["parameters"],
                                title=f"best {len(rows)} trials by {s.objective}"))
    for reason, n in list(failure_reasons(res.rows).items())[:3]:
        console.print(f"[yellow]failed[/] {n}x: {reason}")
    if res.importance:
        irows = [[short_key(k), f"{v:.2f}", Text("█" * max(1, round(v * 30)), style="cyan")]
                 for k, v in sorted(res.importance.items(), key=lambda kv: -kv[1])]
        console.print(fit_table(console, [("parameter", {}), ("importance", {"justify": "right"}), ("", {})], irows,
                                drop=[""], title="parameter importance (PED-ANOVA)"))
    elif res.importance_note:
        console.print(f"[dim]parameter importance: {res.importance_note}[/]")
    snippet = res.snippet()
    if snippet is None:
        console.print("[red]no trial completed[/]: nothing to recommend")
        return
    console.print("[bold]config snippet[/] (the best trial's parameters; merge into config.json):")
    console.print(json.dumps(snippet, indent=2), markup=False, highlight=False, soft_wrap=True)
    if s.space.fixed:
        console.print(f"[dim]the search also fixed: {json.dumps(s.space.fixed)}[/]", soft_wrap=True)


def _figures(m: dict[str, Any] | None, objective: str, value: float | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {"objective": value, "return": m.get("return"), "trades": m.get("trades"),
            "max_drawdown": m.get("max_drawdown"), "sharpe": m.get("sharpe"), "halts": m.get("halts")}


def validate_json(v, spec) -> dict[str, Any]:
    """``pitrader validate --json`` (keys documented in README)."""
    wins = []
    for r in v.windows:
        w = r.window
        wins.append({
            "index": w.index, "train_from": when(w.train_start), "train_to": when(w.train_end),
            "test_from": when(w.test_start), "test_to": when(w.test_end), "params": r.params,
            "trials_completed": len(r.sweep.completed), "trials_failed": len(r.sweep.rows) - len(r.sweep.completed),
            "in_sample": _figures(r.in_sample, v.objective, r.sweep.best.value if r.sweep.best else None),
            "out_of_sample": _figures(r.out_of_sample, v.objective, r.oos_value),
            "out_of_sample_error": r.oos_error,
        })
    return {"objective": v.objective, "anchored": v.anchored, "trials_per_window": spec.trials, "seed": spec.seed,
            "batch": spec.batch, "study": str(spec.study_path), "windows": wins,
            "stitched": {**v.stitched_stats, "from": when(v.stitched[0][0]) if v.stitched else None,
                         "to": when(v.stitched[-1][0]) if v.stitched else None,
                         "equity": [[when(ts), round(eq, 6)] for ts, eq in v.stitched[::max(1, len(v.stitched) // 200)]]},
            "verdict": v.verdict, "verdict_text": v.verdict_text}


def render_validation(console, v) -> None:
    from core.service.tables import fit_table

    def day(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d")

    obj = v.objective
    show_obj = obj != "return"  # else the objective columns repeat the return columns
    as_pct = obj == "expectancy"
    cols = [("#", {"justify": "right"}), ("train", {}), ("test", {})]
    cols += [(f"IS {obj}", {"justify": "right"}), (f"OOS {obj}", {"justify": "right"})] if show_obj else []
    cols += [("IS return", {"justify": "right"}), ("OOS return", {"justify": "right"}),
             ("IS trades", {"justify": "right"}), ("OOS trades", {"justify": "right"}),
             ("IS max DD", {"justify": "right"}), ("OOS max DD", {"justify": "right"})]

    def span(a: int, b: int) -> str:
        return f"{day(a)} {round((b - a) / DAY_MS, 1):g}d"

    def val(x: float | None) -> str:
        return "-" if x is None else pct(x) if as_pct else fmt(x)

    rows = []
    for r in v.windows:
        w, i, o = r.window, r.in_sample or {}, r.out_of_sample or {}
        row = [str(w.index + 1), span(w.train_start, w.train_end), span(w.test_start, w.test_end)]
        row += [val(r.sweep.best.value if r.sweep.best else None), val(r.oos_value)] if show_obj else []
        row += [pct(i.get("return")), pct(o.get("return")), str(i.get("trades", "-")), str(o.get("trades", "-")),
                pct(i.get("max_drawdown")).lstrip("+"), pct(o.get("max_drawdown")).lstrip("+")]
        rows.append(row)
    console.print(fit_table(console, cols, rows, title=f"walk-forward, {'anchored' if v.anchored else 'rolling'} "
                            "windows: in-sample (IS: the train window the parameters were chosen on) vs "
                            "out-of-sample (OOS: the next window, never seen by the search)",
                            drop=["IS max DD", "OOS max DD", "IS trades", "OOS trades", "train"]))
    s = v.stitched_stats
    if s["return"] is not None:
        console.print(f"stitched out-of-sample equity: return {pct(s['return'])}, max drawdown "
                      f"{pct(s['max_drawdown']).lstrip('+')}, Sharpe {fmt(s['sharpe'])}")
    for r in v.windows:
        if r.params is not None:
            console.print(f"[dim]window {r.window.index + 1} parameters: {json.dumps(r.params)}[/]", soft_wrap=True)
    style = {"holds": "bold green", "overfit": "bold red", "no_edge": "bold red"}.get(v.verdict, "bold yellow")
    console.print(f"[{style}]{v.verdict_text}[/]", soft_wrap=True)
