"""The space file: parsing, its one-line errors (file + key), dotted keys, and the commands' exits for it."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from core.cli import main
from core.config import Config, config_from_dict, to_dict
from core.research.space import SpaceError, apply, load_space, parse_space
from core.research.sweep import nest
from core.research.trial import Task, run_trial
from tests.conftest import ROOT
from tests.research.conftest import SPACE

BASE = to_dict(Config())


def test_the_example_space_is_valid():
    space = load_space(ROOT / "research" / "spaces" / "example.json", BASE)
    assert [p.key for p in space.params][:2] == ["strategies.params.momentum.roc_period",
                                                  "strategies.params.momentum.breakout_period"]
    assert space.fixed["risk.max_drawdown_pct"] == 1.0


@pytest.mark.parametrize("params, key, words", [
    ({"risk.nope": {"type": "int", "low": 1, "high": 2}}, "params.risk.nope", "unknown config key"),
    ({"risk": {"type": "int", "low": 1, "high": 2}}, "params.risk", "names a config section"),
    ({"strategies.params.momentum.nope": {"type": "int", "low": 1, "high": 2}},
     "params.strategies.params.momentum.nope", "unknown parameter (known for momentum: roc_period"),
    ({"strategies.params.nope.x": {"type": "int", "low": 1, "high": 2}}, "params.strategies.params.nope.x",
     "with a strategy from"),
    ({"risk.max_open_positions": {"type": "int", "low": 9, "high": 2}}, "params.risk.max_open_positions.high",
     "expected at least low (9)"),
    ({"risk.max_open_positions": {"type": "int", "low": 1.5, "high": 2}}, "params.risk.max_open_positions.low",
     "expected an integer"),
    ({"risk.max_open_positions": {"type": "int", "low": 1}}, "params.risk.max_open_positions.high", "missing"),
    ({"risk.risk_per_trade_pct": {"type": "float", "low": 0, "high": 0.1, "log": True}},
     "params.risk.risk_per_trade_pct.low", "on a log scale"),
    ({"risk.risk_per_trade_pct": {"type": "float", "low": 0.01, "high": 0.1, "log": True, "step": 0.01}},
     "params.risk.risk_per_trade_pct.step", "either step or log"),
    ({"risk.risk_per_trade_pct": {"type": "range", "low": 0.01, "high": 0.1}},
     "params.risk.risk_per_trade_pct.type", '"int", "float" or "choice"'),
    ({"risk.risk_per_trade_pct": {"type": "float", "low": 0.01, "high": 0.5}},
     "params.risk.risk_per_trade_pct", "high 0.5: expected a value <= 0.2"),
    ({"trading.order_type": {"type": "choice", "choices": ["market", "stop"]}},
     "params.trading.order_type", 'choice "stop": expected one of "market", "limit"'),
    ({"trading.order_type": {"type": "choice", "choices": []}}, "params.trading.order_type.choices", "non-empty"),
    ({"strategies.params.momentum.roc_period": {"type": "int", "low": 0, "high": 5}},
     "params.strategies.params.momentum.roc_period", "low 0: expected a value >= 1"),
])
def test_bad_params_name_the_file_and_key(tmp_path, params, key, words):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"params": params}))
    with pytest.raises(SpaceError) as err:
        load_space(path, BASE)
    assert err.value.key == key
    assert str(err.value).startswith(f"{path}: {key}: ") and words in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text, key", [
    ("{", "line 1 column 2"), ("[]", "(top level)"), ('{"params": {}}', "params"),
    ('{"params": {"a.b": 1}, "extra": 1}', "extra"),
    ('{"params": {"risk.max_open_positions": {"type": "int", "low": 1, "high": 2}}, '
     '"fixed": {"risk.max_open_positions": 3}}', "fixed.risk.max_open_positions"),
])
def test_structural_errors(text, key):
    with pytest.raises(SpaceError) as err:
        parse_space(text, "f.json")
    assert err.value.key == key


def test_fixed_values_are_checked_too(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"fixed": {"risk.max_drawdown_pct": 7}, "params": SPACE["params"]}))
    with pytest.raises(SpaceError, match=r"fixed\.risk\.max_drawdown_pct: expected a value <= 1"):
        load_space(path, BASE)


def test_a_bound_refused_only_in_combination_is_left_to_the_trials():
    """A stop wider than the default target is fine if the target is searched too: not a space error."""
    space = parse_space(json.dumps({"params": {"trading.stop_loss_pct": {"type": "float", "low": 0.02, "high": 0.2},
                                               "trading.take_profit_pct": {"type": "float", "low": 0.05, "high": 0.5}}}))
    from core.research.space import check_space

    check_space(space, BASE)


def test_a_combination_the_config_refuses_is_a_failed_trial_not_a_crash(slice_dir):
    task = Task(index=0, base=BASE, values={"trading.stop_loss_pct": 0.2}, objective="sharpe")
    out = run_trial(task, slice_dir)
    assert out["state"] == "fail" and out["value"] is None
    assert out["error"].startswith("config refused: trading.stop_loss_pct: expected less than")


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.sampled_from(["risk.risk_per_trade_pct", "trading.max_hold_hours", "scanner.candles",
                                        "strategies.params.momentum.roc_period", "strategies.weights.momentum",
                                        "strategies.params.mean_reversion.rsi_period"]),
                       st.integers(1, 99), min_size=1))
def test_dotted_values_land_where_config_json_has_them(values):
    doc = apply(BASE, values)
    for key, v in values.items():
        node = doc
        for part in key.split("."):
            node = node[part]
        assert node == v
    assert nest(values) == {k: v for k, v in nest(values).items()}  # nest is total
    snippet = nest(values)
    for key, v in values.items():
        node = snippet
        for part in key.split("."):
            node = node[part]
        assert node == v
    assert BASE == to_dict(Config())  # apply copies


def test_snippet_is_valid_config():
    snippet = nest({"strategies.params.momentum.roc_period": 12, "risk.risk_per_trade_pct": 0.01})
    merged = apply(BASE, {"strategies.params.momentum.roc_period": 12, "risk.risk_per_trade_pct": 0.01})
    cfg = config_from_dict(merged)
    assert cfg.risk.risk_per_trade_pct == 0.01 and cfg.strategies.params["momentum"]["roc_period"] == 12
    assert snippet == {"risk": {"risk_per_trade_pct": 0.01}, "strategies": {"params": {"momentum": {"roc_period": 12}}}}


# --- the commands' exits -----------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["sweep", "validate"])
def test_bad_space_file_exits_78_with_one_line(command, slice_dir, space_file, capsys, tmp_path):
    bad = space_file({"params": {"risk.nope": {"type": "int", "low": 1, "high": 2}}})
    code = main(["--state-dir", str(tmp_path / "var"), command, "--data", str(slice_dir), "--space", str(bad)])
    err = capsys.readouterr().err
    assert code == 78
    assert err == f"pitrader {command}: {bad}: params.risk.nope: unknown config key (known under risk: " \
                  f"{', '.join(sorted(BASE['risk']))})\n"


def test_missing_space_file_exits_66(slice_dir, tmp_path, capsys):
    code = main(["--state-dir", str(tmp_path / "var"), "sweep", "--data", str(slice_dir), "--space",
                 str(tmp_path / "nope.json")])
    assert code == 66
    assert capsys.readouterr().err == f"pitrader sweep: {tmp_path / 'nope.json'}: (file): not found\n"


def test_missing_data_folder_exits_65(space_file, tmp_path, capsys):
    code = main(["--state-dir", str(tmp_path / "var"), "sweep", "--data", str(tmp_path / "none"),
                 "--space", str(space_file())])
    assert code == 65 and "expected a directory of OHLCV CSV files" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["sweep", "validate"])
def test_without_the_research_extra_one_line_and_exit_69(command, tmp_path):
    """The appliance's CLI (help included) works without Optuna/Dask; the research commands say what to install."""
    block = ("import sys\n"
             "class Block:\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name.split('.')[0] in ('optuna', 'dask', 'distributed'):\n"
             "            raise ImportError('blocked: ' + name)\n"
             "sys.meta_path.insert(0, Block())\n"
             "from core.cli import main, build_parser\n"
             "build_parser()\n"
             f"sys.exit(main(['{command}', '--data', '.', '--space', 'x.json']))\n")
    out = subprocess.run([sys.executable, "-c", block], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 69, out.stderr
    assert out.stdout == (f"pitrader {command} needs the research extra: pip install 'pitrader[research]' "
                          "(./install.sh --dev installs it)\n")
