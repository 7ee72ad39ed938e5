"""Sweeps: resuming after an interruption, determinism, failed trials, the CLI, and a real Dask cluster."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.cli import main
from core.config import Config, to_dict
from core.research.space import parse_space
from core.research.sweep import SweepSpec, Workers, run_sweep
from tests.research.conftest import SPACE

BASE = to_dict(Config())


def spec_for(data: Path, db: Path, trials: int, space: dict = SPACE, objective: str = "return") -> SweepSpec:
    return SweepSpec(data=data, space=parse_space(json.dumps(space), "space.json"), base=BASE, objective=objective,
                     trials=trials, study_path=db, seed=7, batch=2)


def summary(res) -> list[tuple]:
    return [(r.index, r.state, r.value, json.dumps(r.params, sort_keys=True)) for r in res.rows]


@pytest.fixture(scope="module")
def local_workers(slice_dir):
    workers = Workers(slice_dir, "1h", jobs=2)
    yield workers
    workers.close()


@pytest.fixture(scope="module")
def straight(slice_dir, local_workers, tmp_path_factory):
    """Six trials in one go: the reference the other runs must reproduce."""
    return run_sweep(spec_for(slice_dir, tmp_path_factory.mktemp("straight") / "s.db", 6), local_workers)


def test_an_interrupted_sweep_resumes_and_ends_where_a_straight_one_does(slice_dir, local_workers, straight, tmp_path):
    db = tmp_path / "study.db"
    seen = []

    def stop_after_three(done, total, best, row):
        seen.append(row.index)
        if len(seen) == 3:
            raise KeyboardInterrupt  # what Ctrl-C does in the command (the pool is then cancelled)

    interrupted = Workers(slice_dir, "1h", jobs=2)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec_for(slice_dir, db, 4), interrupted, stop_after_three)
    interrupted.close(cancel=True)

    again = run_sweep(spec_for(slice_dir, db, 4), local_workers)  # the same command again
    assert again.ran == 1 and again.stored == 4
    more = run_sweep(spec_for(slice_dir, db, 6), local_workers)  # then asking for more trials
    assert more.ran == 2 and len(more.rows) == 6
    assert summary(more) == summary(straight)
    assert more.best.index == straight.best.index and more.best.params == straight.best.params
    assert more.snippet() == straight.snippet()
    assert more.importance == straight.importance


def test_same_data_space_and_seed_give_the_same_trials(slice_dir, local_workers, straight, tmp_path):
    one = run_sweep(spec_for(slice_dir, tmp_path / "a.db", 4), Workers(slice_dir, "1h", jobs=1))
    assert summary(one) == summary(straight)[:4]
    other_seed = run_sweep(spec_for(slice_dir, tmp_path / "b.db", 2).__class__(
        **{**vars(spec_for(slice_dir, tmp_path / "b.db", 2)), "seed": 8}), local_workers)
    assert [r[3] for r in summary(other_seed)] != [r[3] for r in summary(straight)[:2]]


def test_refused_combinations_are_failed_trials_with_the_configs_reason(slice_dir, local_workers, tmp_path):
    space = {"params": {"trading.stop_loss_pct": {"type": "choice", "choices": [0.03, 0.2]}}}
    res = run_sweep(spec_for(slice_dir, tmp_path / "f.db", 4, space=space), local_workers)
    wide = [r for r in res.rows if r.params["trading.stop_loss_pct"] == 0.2]
    assert {r.state for r in wide} <= {"fail"} and {r.state for r in res.rows if r not in wide} <= {"ok"}
    assert all(r.error.startswith("config refused: trading.stop_loss_pct: expected less than") for r in wide)
    assert len(res.rows) == 4


def test_the_command_prints_json_with_the_documented_keys(slice_dir, space_file, tmp_path, capsys):
    args = ["--state-dir", str(tmp_path / "var"), "sweep", "--data", str(slice_dir), "--space", str(space_file()),
            "--objective", "calmar", "--trials", "2", "--jobs", "1", "--json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"objective", "trials", "completed", "failed", "ran", "study", "study_name", "seed", "batch",
                        "from", "to", "timeframe", "fixed", "best", "top", "importance", "importance_note",
                        "snippet", "failures"}
    assert doc["ran"] == 2 and doc["completed"] + doc["failed"] == 2
    assert doc["study"] == str(tmp_path / "var" / "research" / "studies.db")
    if doc["best"]:
        assert set(doc["best"]["params"]) == set(SPACE["params"])
        assert doc["best"]["value"] == doc["best"]["metrics"]["calmar"]
    assert main(args) == 0  # the same command again: nothing left to run
    assert json.loads(capsys.readouterr().out)["ran"] == 0


def test_a_real_dask_cluster_gives_the_same_trials_as_local_workers(slice_dir, straight, tmp_path):
    """Two worker processes on this machine; the candle files are scattered once and materialised once per worker."""
    from distributed import LocalCluster

    from core.research import trial

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        workers = Workers(slice_dir, "1h", cluster=cluster.scheduler_address)
        try:
            assert workers.size == 2
            res = run_sweep(spec_for(slice_dir, tmp_path / "c.db", 4), workers)
            folders = workers.client.run(lambda: list(trial._MATERIALISED))
        finally:
            workers.close()
    assert summary(res) == summary(straight)[:4]
    assert len(folders) == 2 and all(len(v) == 1 for v in folders.values())  # one copy of the data per worker
