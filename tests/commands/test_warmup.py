"""`pitrader warmup`: compiles (or loads) every kernel the scanner uses and exits 0."""
from __future__ import annotations

from core.cli import main
from core.commands.warmup import warm_scan
from core.config import config_from_dict


def test_warmup_command_reports_time_and_cache(config_file, capsys):
    assert main(["--config", str(config_file()), "warmup"]) == 0
    out = capsys.readouterr().out
    assert "ok: warmed in " in out and "kernel signatures compiled" in out and "cache: " in out


def test_warmup_falls_back_to_defaults_on_a_bad_config(config_file, capsys):
    assert main(["--config", str(config_file({"scanner": {"candles": 3}})), "warmup"]) == 0
    out = capsys.readouterr().out
    assert "scanner.candles" in out and "warming with the default settings" in out


def test_warm_scan_runs_the_real_scan_path():
    # every generated pair gets through the data checks, so all strategy kernels were called
    assert warm_scan(config_from_dict({})) == 3
    assert warm_scan(config_from_dict({"scanner": {"timeframes": ["15m", "1h", "4h"]}})) == 3
