"""Parameter sweeps: Optuna (TPE) picks parameter sets, workers backtest them, SQLite keeps the study.

Determinism and resuming. Trials are numbered 0, 1, 2, ... and suggested in rounds of
``batch`` (trials ``r*batch .. r*batch+batch-1``). Round ``r`` is suggested by a fresh TPE
sampler seeded from (seed, r) that sees exactly the trials of the earlier rounds, in order, so
a trial's parameters depend only on the data, space, config, seed and batch -- not on the
number of workers, their speed, the order results arrive in, or interruptions. Each finished
trial is written to the study at once (with its number as the ``index`` user attribute); a
rerun of the same command finds them and runs only the missing numbers. Asking for more
trials later continues the same sequence: 20 trials then 40 equals 40 at once.

Executors: local worker processes (``concurrent.futures.ProcessPoolExecutor``, spawned) or a
Dask cluster through ``distributed.Client.get_executor()`` (the same concurrent.futures
interface), the candle files scattered to every worker once (``trial.Bundle``).
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import multiprocessing
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from core.research.space import Param, Space
from core.research.trial import Task, data_folder_files, make_bundle, pool_initializer, worker_trial

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)

DEFAULT_BATCH = 8


# --- executors -----------------------------------------------------------------------------------

class ClusterUnavailable(Exception):
    """The --cluster scheduler cannot be reached; ``str()`` is one line."""


class Workers:
    """Where trials run: ``submit(task) -> concurrent.futures.Future`` on local processes or a cluster."""

    def __init__(self, data: Path, timeframe: str, jobs: int | None = None, cluster: str | None = None) -> None:
        self.cluster = cluster
        self.client = None
        if cluster:
            from distributed import Client

            try:
                self.client = Client(cluster, timeout="15s")
            except (OSError, TimeoutError) as exc:
                raise ClusterUnavailable(f"--cluster {cluster}: cannot reach the scheduler ({exc})") from None
            # the candle files travel to every worker once; tasks carry only a reference to them
            self.data: Any = self.client.scatter(make_bundle(data, timeframe), broadcast=True, hash=False)
            self.executor: cf.Executor = self.client.get_executor(pure=False)
            self.size = max(1, len(self.client.scheduler_info(n_workers=-1).get("workers", {})))
        else:
            self.size = max(1, jobs or os.cpu_count() or 1)
            self.data = str(data)
            self.executor = cf.ProcessPoolExecutor(self.size, mp_context=multiprocessing.get_context("spawn"),
                                                   initializer=pool_initializer)

    def submit(self, task: Task) -> cf.Future:
        return self.executor.submit(worker_trial, task, self.data)

    def close(self, cancel: bool = False) -> None:
        """Shut down; ``cancel`` (Ctrl-C) drops queued trials and stops running ones now."""
        if self.client is not None:
            self.executor.shutdown(wait=not cancel)
            self.client.close()
            return
        if cancel:
            procs = list(getattr(self.executor, "_processes", {}).values())  # no public way to stop a running task
            self.executor.shutdown(wait=False, cancel_futures=True)
            for p in procs:
                p.terminate()
            for p in procs:
                p.join(5)
        else:
            self.executor.shutdown(wait=True)


# --- the space in Optuna's terms -----------------------------------------------------------------

def distribution(p: Param):
    if p.kind == "int":
        return IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
    if p.kind == "float":
        return FloatDistribution(float(p.low), float(p.high), log=p.log, step=p.step)
    return CategoricalDistribution([json.dumps(c, sort_keys=True) for c in p.choices])


def distributions(space: Space) -> dict[str, Any]:
    return {p.key: distribution(p) for p in space.params}


def decode(space: Space, params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's parameter values -> config values (choices are stored as JSON text)."""
    kinds = {p.key: p.kind for p in space.params}
    return {k: (json.loads(v) if kinds.get(k) == "choice" else v) for k, v in params.items()}


def nest(values: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys -> the nested config.json shape (the snippet to paste)."""
    out: dict[str, Any] = {}
    for key, v in sorted(values.items()):
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = v
    return out


# --- the sweep -----------------------------------------------------------------------------------

@dataclass
class SweepSpec:
    data: Path
    space: Space
    base: dict[str, Any]  # config dict the trials start from
    objective: str
    trials: int
    study_path: Path
    seed: int = 0
    batch: int = DEFAULT_BATCH
    start_ms: int | None = None
    end_ms: int | None = None
    timeframe: str = "1h"

    def fingerprint(self) -> str:
        """What makes two sweeps the same study (rerun = resume). Not the trial count: more trials continue it."""
        files = [(p.name, p.stat().st_size) for p in data_folder_files(self.data, self.timeframe)]
        ident = {"space": self.space.fingerprint(), "objective": self.objective, "seed": self.seed,
                 "batch": self.batch, "from": self.start_ms, "to": self.end_ms, "timeframe": self.timeframe,
                 "data": files, "base": self.base}
        return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]

    @property
    def study_name(self) -> str:
        return f"{self.objective}-{self.fingerprint()}"


@dataclass
class TrialRow:
    index: int
    state: str  # ok | fail
    value: float | None
    params: dict[str, Any]  # config values by dotted key
    metrics: dict[str, Any]
    error: str | None


@dataclass
class SweepResult:
    spec: SweepSpec
    rows: list[TrialRow]  # trials 0 .. spec.trials-1 that exist, by index
    ran: int  # trials run by this invocation
    stored: int  # trials in the study (may exceed spec.trials)
    importance: dict[str, float] | None = None
    importance_note: str | None = None
    interrupted: bool = False

    @property
    def completed(self) -> list[TrialRow]:
        return [r for r in self.rows if r.state == "ok"]

    @property
    def best(self) -> TrialRow | None:
        ok = self.completed
        return max(ok, key=lambda r: (r.value, -r.index)) if ok else None

    def top(self, n: int) -> list[TrialRow]:
        return sorted(self.completed, key=lambda r: (-r.value, r.index))[:n]

    def snippet(self) -> dict[str, Any] | None:
        best = self.best
        return nest(best.params) if best else None


def open_study(spec: SweepSpec) -> optuna.Study:
    spec.study_path.parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{spec.study_path}")
    study = optuna.create_study(study_name=spec.study_name, storage=storage, direction="maximize",
                                load_if_exists=True)
    if "objective" not in study.user_attrs:
        for k, v in (("objective", spec.objective), ("seed", spec.seed), ("batch", spec.batch),
                     ("data", str(spec.data)), ("space", spec.space.file)):
            study.set_user_attr(k, v)
    return study


def _round_seed(seed: int, r: int) -> int:
    return int(np.random.SeedSequence([seed, r]).generate_state(1)[0])


def _memory_study(trials: list, seed: int | None = None) -> optuna.Study:
    with warnings.catch_warnings():  # multivariate and constant_liar are "experimental" (stable for years)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.add_trials(trials)
    return study


def suggest_round(spec: SweepSpec, r: int, history: list, count: int) -> list[dict[str, Any]]:
    """The first ``count`` parameter sets of round ``r`` (Optuna's internal values), given the
    earlier rounds' trials in index order."""
    shadow = _memory_study(history, _round_seed(spec.seed, r))
    dists = distributions(spec.space)
    return [shadow.ask(fixed_distributions=dists).params for _ in range(count)]


def _index(t) -> int | None:
    v = t.user_attrs.get("index")
    return v if isinstance(v, int) else None


def _row(spec: SweepSpec, t) -> TrialRow:
    return TrialRow(index=_index(t), state="ok" if t.state == TrialState.COMPLETE else "fail", value=t.value,
                    params=decode(spec.space, t.params), metrics=t.user_attrs.get("metrics", {}),
                    error=t.user_attrs.get("error"))


def task_for(spec: SweepSpec, index: int, values: dict[str, Any], curve: bool = False,
             start_ms: int | None = None, end_ms: int | None = None) -> Task:
    return Task(index=index, base=spec.base, values={**spec.space.fixed, **values}, objective=spec.objective,
                start_ms=spec.start_ms if start_ms is None else start_ms,
                end_ms=spec.end_ms if end_ms is None else end_ms, timeframe=spec.timeframe, curve=curve)


OnResult = Callable[[int, int, "TrialRow | None", TrialRow], None]  # (done, total, best, this trial)


def run_sweep(spec: SweepSpec, workers: Workers, on_result: OnResult | None = None) -> SweepResult:
    """Run the missing trials of ``spec`` (see the module docstring); KeyboardInterrupt propagates
    after the finished trials are stored."""
    study = open_study(spec)
    dists = distributions(spec.space)
    done = {_index(t): t for t in study.get_trials(deepcopy=False) if _index(t) is not None
            and t.state in (TrialState.COMPLETE, TrialState.FAIL)}
    missing = [k for k in range(spec.trials) if k not in done]
    ran = 0
    best: TrialRow | None = None
    for t in done.values():
        row = _row(spec, t)
        if row.index < spec.trials and row.state == "ok" and (best is None or (row.value, -row.index) > (best.value, -best.index)):
            best = row
    finished = spec.trials - len(missing)
    for r in sorted({k // spec.batch for k in missing}):
        lo = r * spec.batch
        history = [done[k] for k in sorted(done) if k < lo]
        todo = [k for k in missing if k // spec.batch == r]
        suggested = suggest_round(spec, r, history, max(todo) - lo + 1)
        futures = {}
        for k in todo:
            params = suggested[k - lo]
            futures[workers.submit(task_for(spec, k, decode(spec.space, params)))] = (k, params)
        for fut in cf.as_completed(futures):
            k, params = futures[fut]
            res = fut.result()
            ok = res["state"] == "ok"
            frozen = optuna.trial.create_trial(
                state=TrialState.COMPLETE if ok else TrialState.FAIL, value=res["value"] if ok else None,
                params=params, distributions=dists,
                user_attrs={"index": k, "metrics": res["metrics"], "error": res["error"]})
            study.add_trial(frozen)
            done[k] = frozen
            ran += 1
            finished += 1
            row = _row(spec, frozen)
            if ok and (best is None or (row.value, -row.index) > (best.value, -best.index)):
                best = row
            if on_result:
                on_result(finished, spec.trials, best, row)
    rows = [_row(spec, done[k]) for k in sorted(done) if k < spec.trials]
    result = SweepResult(spec=spec, rows=rows, ran=ran, stored=len(done))
    result.importance, result.importance_note = importance(spec, [done[k] for k in sorted(done) if k < spec.trials])
    return result


def importance(spec: SweepSpec, trials: list) -> tuple[dict[str, float] | None, str | None]:
    """Parameter importance over the completed trials (Optuna's PED-ANOVA: deterministic, needs neither
    scikit-learn nor scipy, unlike fANOVA), or why there is none."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if len(spec.space.params) == 1:
        return {spec.space.params[0].key: 1.0}, "one parameter searched"
    if len(complete) < 4:
        return None, f"needs at least 4 completed trials (have {len(complete)})"
    try:
        from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            imp = get_param_importances(_memory_study(trials), evaluator=PedAnovaImportanceEvaluator())
    except Exception as exc:  # noqa: BLE001 - importance is a nicety; the sweep's results stand without it
        return None, f"not computed ({exc.__class__.__name__}: {exc})"
    return {k: float(v) for k, v in imp.items()}, None
