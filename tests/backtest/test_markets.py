"""Exchange order rules in the backtest: applied from a markets file, a visible warning without one."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.backtest.test_baseline import _cli
from tests.backtest.test_runner import write_slice

ARGS = ("--verify", "0", "--baseline-seeds", "0", "--no-html", "--from", "2021-01-20")


@pytest.fixture(scope="module")
def slices(tmp_path_factory):
    with_rules = write_slice(tmp_path_factory.mktemp("rules"))
    bare = tmp_path_factory.mktemp("bare")
    shutil.copytree(with_rules / "1h", bare / "1h")
    return with_rules, bare


def test_markets_file_found_next_to_the_data(slices):
    with_rules, _ = slices
    d = json.loads(_cli("backtest", "--data", str(with_rules), "--json", *ARGS).stdout)
    assert d["markets"] == str(with_rules / "markets.json")
    out = _cli("backtest", "--data", str(with_rules), *ARGS)
    assert out.returncode == 0 and "no markets file" not in out.stdout


def test_no_markets_file_is_a_visible_warning(slices, tmp_path):
    with_rules, bare = slices
    d = json.loads(_cli("backtest", "--data", str(bare), "--json", *ARGS).stdout)
    assert d["markets"] is None
    out = _cli("backtest", "--data", str(bare), *ARGS)
    assert out.returncode == 0 and "warning: no markets file" in " ".join(out.stdout.split())
    page = tmp_path / "r.html"
    _cli("backtest", "--data", str(bare), "--verify", "0", "--baseline-seeds", "0", "--from", "2021-01-20",
         "--html", str(page))
    assert "warning: no markets file" in page.read_text()
    # --markets applies a rules file from anywhere
    rules = tmp_path / "rules.json"
    shutil.copy(with_rules / "markets.json", rules)
    given = json.loads(_cli("backtest", "--data", str(bare), "--json", "--markets", str(rules), *ARGS).stdout)
    found = json.loads(_cli("backtest", "--data", str(with_rules), "--json", *ARGS).stdout)
    assert given["markets"] == str(rules)
    for key in ("trades", "pnl", "fees", "end_equity"):
        assert given[key] == found[key]
    out = _cli("backtest", "--data", str(bare), "--markets", str(tmp_path / "none.json"), *ARGS)
    assert out.returncode == 65 and "no such file" in out.stderr
