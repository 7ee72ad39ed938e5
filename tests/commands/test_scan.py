"""`pitrader scan`: the stops and targets it shows are the ones the risk gate would enter with."""
import json
import subprocess
import sys
from decimal import Decimal

from tests.conftest import ALL_STRATEGIES, ROOT, SAMPLE
from tests.support.trading import sample_markets


def test_scan_shows_the_gate_stop_and_target(config_file, tmp_path):
    cfg = config_file({"trading": {"stop_loss_pct": 0.03, "take_profit_pct": 0.06},
                       "scanner": {"min_opportunity_score": 0.5}, **ALL_STRATEGIES})
    proc = subprocess.run([sys.executable, "-m", "core", "--config", str(cfg), "--state-dir", str(tmp_path),
                           "scan", "--replay", str(SAMPLE), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    opps = json.loads(proc.stdout)["opportunities"]
    assert opps
    markets = sample_markets()
    for o in opps:
        price, stop, target = Decimal(str(o["price"])), Decimal(str(o["stop"])), Decimal(str(o["target"]))
        tick = markets[o["symbol"]].price_tick
        # never wider than trading.stop_loss_pct (the strategies' own stops are 6-20 % below here), on the tick
        assert price * Decimal("0.97") <= stop < price, o
        assert target > price and target % tick == 0 and stop % tick == 0, o
