"""Config validation: every bad value is one line naming file and key, exit 78, nothing else."""
import json
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from core.cli import main
from core.config import Config, ConfigError, config_from_dict, load_config, reference, to_dict
from core.secrets import load_secrets, mask
from tests.conftest import ROOT


def test_shipped_config_is_the_defaults():
    assert to_dict(load_config(ROOT / "config.json")) == to_dict(Config())


def test_reference_documents_every_key():
    keys = {k for k, _, _ in reference()}
    assert {"trading.position_size_pct", "risk.max_daily_loss_pct", "scanner.min_opportunity_score", "mode",
            "exchange.id", "exchange.api_url"} <= keys
    assert all(help_text for _, _, help_text in reference())


@pytest.mark.parametrize("data, key, expected", [
    ({"mode": "yolo"}, "mode", 'one of "paper", "live"'),
    ({"risk": {"max_daily_loss_pct": "x"}}, "risk.max_daily_loss_pct", "a number"),
    ({"risk": {"max_daily_loss_pct": 1.5}}, "risk.max_daily_loss_pct", "<= 1"),
    ({"risk": {"max_open_positions": 2.5}}, "risk.max_open_positions", "an integer"),
    ({"trading": {"position_sise_pct": 0.1}}, "trading.position_sise_pct", "unknown key"),
    ({"trading": {"stop_loss_pct": 0.2, "take_profit_pct": 0.1}}, "trading.stop_loss_pct", "less than"),
    ({"exchange": {"api_url": "ftp://x"}}, "exchange.api_url", "format"),
    ({"scanner": {"timeframes": ["1h", "7h"]}}, "scanner.timeframes[1]", "one of"),
    ({"scanner": {"timeframes": ["4h", "1h"]}}, "scanner.confirm_timeframe", "longer than 4h"),
    ({"exchange": []}, "exchange", "an object"),
    ({"risk": {"max_daily_loss_pct": 0.5, "max_drawdown_pct": 0.2}}, "risk.max_daily_loss_pct", "at most"),
    ({"strategies": {"enabled": ["astrology"]}}, "strategies.enabled[0]", "one of"),
    ({"paper": {"spread_pct": -0.001}}, "paper.spread_pct", ">= 0"),
    ({"paper": {"spread_pct": 1}}, "paper.spread_pct", "<= 0.05"),
    ({"paper": {"spread_pct": "wide"}}, "paper.spread_pct", "a number"),
    ({"strategies": {"params": {"mean_reversion": {"max_hold_hours": -1}}}},
     "strategies.params.mean_reversion.max_hold_hours", ">= 0"),
    ({"strategies": {"params": {"mean_reversion": {"trailing_stop_pct": 0.6}}}},
     "strategies.params.mean_reversion.trailing_stop_pct", "<= 0.5"),
])
def test_bad_values_name_the_key(data, key, expected):
    with pytest.raises(ConfigError) as err:
        config_from_dict(data, "c.json")
    assert err.value.key == key
    assert expected in str(err.value)
    assert str(err.value).startswith(f"c.json: {key}: ")


def test_invalid_json_names_line(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('{\n "mode": "paper",\n}')
    with pytest.raises(ConfigError, match=r"c.json: line 3 column 1: expected valid JSON"):
        load_config(p)


# Any JSON-ish value placed at any known key (or an unknown one) either validates or fails with
# a ConfigError that names a key; never another exception.
_json = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) |
                     st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                     max_leaves=6)
_KEYS = [k for k, _, _ in reference()] + ["bogus", "risk.bogus"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(_KEYS), value=_json)
def test_fuzzed_values_never_crash(key, value):
    data: dict = {}
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    try:
        config_from_dict(data, "f.json")
    except ConfigError as exc:
        assert str(exc).startswith("f.json: ")
        assert exc.key.split("[")[0].split(".")[0] in {p.split(".")[0] for p in _KEYS} | {"(top level)"}


@settings(max_examples=25, deadline=None)
@given(key=st.sampled_from([k for k, _, _ in reference() if k not in ("exchange.api_url",)]),
       value=st.sampled_from([-1, "nope", [1], {"a": 1}, 10**9]))
def test_cli_exits_78_and_changes_nothing(tmp_path_factory, key, value):
    tmp = tmp_path_factory.mktemp("cfg")
    data = json.loads((ROOT / "config.json").read_text())
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
        node = node[p]
    if node.get(parts[-1]) == value:
        return
    node[parts[-1]] = value
    path = tmp / "config.json"
    path.write_text(json.dumps(data))
    before = path.read_bytes()
    try:
        config_from_dict(data, str(path))
    except ConfigError as exc:
        code = main(["--config", str(path), "--state-dir", str(tmp / "state"), "config", "check"])
        assert code == 78
        assert exc.key.startswith(parts[0])
        assert path.read_bytes() == before
        assert not (tmp / "state").exists()


def test_cli_error_is_one_line_on_stderr(tmp_path, config_file):
    path = config_file({"risk": {"max_open_positions": 0}})
    proc = subprocess.run([sys.executable, "-m", "core", "--config", str(path), "config", "check"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 78
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "risk.max_open_positions" in lines[0] and str(path) in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("value", [-0.0001, 1, 1.5, 0.0501])
def test_spread_out_of_range_exits_78_naming_the_field(tmp_path, config_file, value):
    path = config_file({"paper": {"spread_pct": value}})
    proc = subprocess.run([sys.executable, "-m", "core", "--config", str(path), "config", "check"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 78
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "paper.spread_pct" in lines[0] and "Traceback" not in proc.stderr


def test_spread_in_range_is_kept_exactly():
    from decimal import Decimal

    assert config_from_dict({"paper": {"spread_pct": 0.05}}).paper.spread_pct == Decimal("0.05")
    assert config_from_dict({"paper": {"spread_pct": 0}}).paper.spread_pct == Decimal(0)
    assert Config().paper.spread_pct == Decimal("0.001")


def test_live_mode_without_keys_is_a_config_error(tmp_path, config_file):
    path = config_file({"mode": "live"})
    env = tmp_path / "empty.env"
    env.write_text("BINANCE_API_KEY=\n")
    assert main(["--config", str(path), "--env-file", str(env), "config", "check"]) == 78


def test_secrets_are_masked_everywhere(tmp_path, config_file, capsys):
    key, secret = "AKEYvalue123456789", "SECRETvalue987654321"
    env = tmp_path / "p.env"
    env.write_text(f"BINANCE_API_KEY={key}\nBINANCE_API_SECRET={secret}\nBINANCE_TESTNET=true\n")
    s = load_secrets(env, environ={})
    assert s.has_keys and s.testnet
    assert key not in repr(s) and secret not in str(s) and key not in json.dumps(s.masked())
    assert main(["--config", str(config_file({"mode": "live"})), "--env-file", str(env), "config", "check",
                 "--json"]) == 0
    out = capsys.readouterr().out
    assert key not in out and secret not in out
    assert json.loads(out)["secrets"]["BINANCE_API_KEY"] == mask(key)


def test_bad_env_values_do_not_echo_the_secret(tmp_path):
    env = tmp_path / "p.env"
    env.write_text("BINANCE_API_KEY=has space inside\nBINANCE_TESTNET=maybe\n")
    with pytest.raises(ConfigError) as err:
        load_secrets(env, environ={})
    assert "BINANCE_TESTNET" in str(err.value)
    env.write_text("BINANCE_API_KEY=has space inside\n")
    with pytest.raises(ConfigError) as err:
        load_secrets(env, environ={})
    assert "has space" not in str(err.value) and "BINANCE_API_KEY" in str(err.value)


def test_readme_documents_every_key_with_its_default():
    readme = (ROOT / "README.md").read_text()
    for key, default, _ in reference():
        assert f"| `{key}` | `{default}` |" in readme, f"README configuration reference is missing {key}"


def test_a_strategys_own_exits_win_and_null_or_no_strategy_follows_trading():
    cfg = config_from_dict({"trading": {"max_hold_hours": 12, "trailing_stop_pct": 0.02},
                            "strategies": {"enabled": ["mean_reversion", "momentum"],
                                           "params": {"momentum": {"max_hold_hours": None,
                                                                   "trailing_stop_pct": 0.05}}}})
    assert (cfg.exits("mean_reversion").max_hold_hours, cfg.exits("mean_reversion").trailing_stop_pct) == (24, 0.08)
    assert (cfg.exits("momentum").max_hold_hours, cfg.exits("momentum").trailing_stop_pct) == (12, 0.05)
    for other in ("manual", "rebuilt"):  # positions without a strategy's rules
        assert cfg.exits(other) == cfg.trading
    assert cfg.exits("momentum").stop_loss_pct == cfg.trading.stop_loss_pct  # only the two exit keys differ
