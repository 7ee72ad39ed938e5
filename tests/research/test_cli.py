"""``run_trials``: however a sweep or validation ends, the workers are stopped and the exit code is right."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.exchange.replay import DataError
from core.exitcodes import EX_DATAERR, EX_INTERRUPTED
from core.research.cli import Setup, run_trials


class Spec:
    study_path = Path("/state/research/studies.db")


class Workers:
    def __init__(self) -> None:
        self.closed: list[bool] = []

    def close(self, cancel: bool = False) -> None:
        self.closed.append(cancel)


def raising(exc: BaseException):
    def trials():
        raise exc
    return trials


def test_a_finished_run_returns_its_result_and_closes_the_workers():
    setup = Setup(Spec(), Workers())
    assert run_trials("sweep", setup, lambda: "result") == "result"
    assert setup.workers.closed == [False]


def test_ctrl_c_cancels_the_workers_and_exits_130_naming_the_study(capsys):
    setup = Setup(Spec(), Workers())
    assert run_trials("sweep", setup, raising(KeyboardInterrupt())) == EX_INTERRUPTED
    assert setup.workers.closed == [True]
    assert capsys.readouterr().err == ("pitrader sweep: interrupted: finished trials are stored in "
                                       "/state/research/studies.db; run the same command again to continue\n")


def test_bad_data_cancels_the_workers_and_exits_65(capsys):
    setup = Setup(Spec(), Workers())
    assert run_trials("validate", setup, raising(DataError("BTC/USDT.csv: line 3"))) == EX_DATAERR
    assert setup.workers.closed == [True]
    assert capsys.readouterr().err == "pitrader validate: data: BTC/USDT.csv: line 3\n"


def test_a_bug_cancels_the_workers_and_propagates():
    setup = Setup(Spec(), Workers())
    with pytest.raises(ZeroDivisionError):
        run_trials("sweep", setup, raising(ZeroDivisionError()))
    assert setup.workers.closed == [True]
