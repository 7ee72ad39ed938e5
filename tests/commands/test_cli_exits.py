"""Exit codes and one-line errors of the command line (issue 14 items 9, 10, 11, 14)."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from core.cli import EXIT_CODES, main
from tests.conftest import ALL_STRATEGIES, ROOT, SAMPLE


def _cli(*args, env=None, timeout=300):
    import os

    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_every_exit_code_is_documented_in_help_readme_and_the_unit():
    help_text = _cli("--help").stdout
    readme = (ROOT / "README.md").read_text()
    table = readme.split("Exit codes (every command")[1].split("\n\n", 2)[1]
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", table, re.M)}
    assert documented == set(EXIT_CODES), (documented, set(EXIT_CODES))
    for code in EXIT_CODES:
        assert re.search(rf"\b{code} ", help_text.replace("\n", " ")), code
    unit = (ROOT / "deploy/systemd/pitrader.service").read_text()
    prevent = re.search(r"^RestartPreventExitStatus=(.*)$", unit, re.M).group(1).split()
    assert {"77", "78"} <= set(prevent)


def test_config_check_accepts_config_after_the_subcommand(config_file, capsys):
    path = config_file()
    assert main(["config", "check", "--config", str(path)]) == 0
    assert str(path) in capsys.readouterr().out


@pytest.mark.parametrize("what", ["state", "numba"])
def test_unusable_state_dir_or_numba_cache_is_one_line_and_exit_77(tmp_path, config_file, what):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    state = blocker / "state" if what == "state" else tmp_path / "state"
    env = {"NUMBA_CACHE_DIR": str(blocker / "numba")} if what == "numba" else {}
    out = _cli("--config", str(config_file()), "--env-file", "/dev/null", "--state-dir", str(state),
               "run", "--replay", str(SAMPLE), "--max-cycles", "1", env=env)
    assert out.returncode == 77, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert str(blocker) in lines[0] and "not a directory" in lines[0].lower()


def test_interrupted_backtest_does_not_exit_0(monkeypatch, tmp_path, capsys):
    """Ctrl-C stops the engine gracefully (a partial report); the exit code must say so."""
    import core.backtest.runner as runner
    from tests.commands.test_widths import backtest_result

    async def interrupted(cfg, spec, progress=None, install_signals=False, plain=False):
        r = backtest_result()
        r.interrupted = True
        return r

    monkeypatch.setattr(runner, "run_backtest", interrupted)
    assert main(["backtest", "--data", str(SAMPLE), "--json"]) == 130
    captured = capsys.readouterr()
    assert json.loads(captured.out)["interrupted"] is True and "interrupted" in captured.err
    # the backtest hides halt warnings only while it runs: the engine's logger is left as it was
    import logging

    assert logging.getLogger("core.engine").filters == []


def test_scan_at_after_the_data_names_its_range(config_file):
    out = _cli("--config", str(config_file()), "scan", "--replay", str(SAMPLE), "--at", "2030-01-01T00:00Z")
    assert out.returncode == 2
    assert "after the data ends" in out.stderr and "2021-04-20" in out.stderr and "2021-05-23" in out.stderr
    assert "universe" not in out.stderr


def test_run_replay_prints_a_summary_and_status_reads_it(tmp_path, config_file):
    state = tmp_path / "state"
    cfg = str(config_file())
    out = _cli("--config", cfg, "--env-file", "/dev/null", "--state-dir", str(state), "run", "--replay",
               str(SAMPLE), "--max-cycles", "30")
    assert out.returncode == 0, out.stderr
    assert "finished" in out.stdout and "final equity" in out.stdout and "max drawdown" in out.stdout
    assert "status --db replay" in out.stdout
    st = _cli("--config", cfg, "--state-dir", str(state), "status", "--db", "replay", "--json")
    assert st.returncode == 0, st.stderr
    doc = json.loads(st.stdout)
    assert doc["equity"] is not None and doc["last_scan"]["pairs_scanned"] > 0
    for p in doc["open_positions"]:  # the replay's marks: each open position has a price and a PnL
        assert p["last_price"] is not None and p["unrealised_pnl"] is not None
    missing = _cli("--config", cfg, "--state-dir", str(tmp_path / "none"), "status", "--db", "replay")
    assert missing.returncode == 66 and "no state database" in missing.stderr


def test_demo_summary_agrees_with_the_books_and_the_halt(tmp_path, config_file):
    """Issue 14 item 11: PnL includes open positions; max drawdown is the risk gate's (>= any halt's)."""
    cfg = config_file({"risk": {"max_drawdown_pct": 0.03, "max_daily_loss_pct": 0.03}, **ALL_STRATEGIES})
    out = _cli("--config", str(cfg), "demo", "--json", "--max-cycles", "150")
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["final_equity"] == pytest.approx(s["start_equity"] + s["total_pnl"])
    assert s["realised_pnl"] + s["unrealised_pnl"] == pytest.approx(s["total_pnl"])
    halts = re.findall(r"drawdown: equity [\d.,]+ is ([\d.]+)% below the peak ([\d.,]+)", out.stderr)
    if not halts:  # the limits are caps (issue 17): without a gap through a stop no halt is reached
        assert 0 < s["max_drawdown"] < 0.03, s
        return
    pct, peak = halts[0]
    # the same peak (the risk gate's, of marked equity) and a max drawdown at least the halt's
    assert f"{s['peak_equity']:.2f}" == peak.replace(",", "")
    assert s["max_drawdown"] * 100 >= float(pct) - 0.005
