import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
OHLCV_1H = SHARED_DATA / "ohlcv" / "1h"
SAMPLE = ROOT / "data" / "sample"
# Config overrides for tests of engine mechanics that need signals on any data: every shipped strategy,
# none standing aside in a falling market, the relative-strength gates open, and momentum and trend
# following on their (frequent) breakout entries instead of the shipped pullbacks (the defaults trade a
# few times a week; see README Strategies).
ALL_STRATEGIES = {"strategies": {"enabled": ["trend_following", "mean_reversion", "momentum"],
                                 "params": {"mean_reversion": {"regime_filter": False, "strength_max": 1.0},
                                            "momentum": {"regime_filter": False, "strength_min": 0.0,
                                                         "entry": "breakout"},
                                            "trend_following": {"regime_filter": False, "strength_min": 0.0,
                                                                "entry": "breakout", "rsi_max": 100.0}}}}


@pytest.fixture
def config_file(tmp_path):
    """Write a config.json (the shipped defaults, deep-updated with overrides) and return its path."""

    def write(overrides: dict | None = None, name: str = "config.json") -> Path:
        data = json.loads((ROOT / "config.json").read_text())

        def merge(dst, src):
            for k, v in src.items():
                if isinstance(v, dict) and isinstance(dst.get(k), dict):
                    merge(dst[k], v)
                else:
                    dst[k] = v

        merge(data, overrides or {})
        path = tmp_path / name
        path.write_text(json.dumps(data))
        return path

    return write


@pytest.fixture
def sample_copy(tmp_path):
    """A writable copy of data/sample."""
    dst = tmp_path / "sample"
    shutil.copytree(SAMPLE, dst)
    return dst
