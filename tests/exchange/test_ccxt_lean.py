"""The lean ccxt loader: only the exchange in use is imported, and ccxt still behaves as usual."""
import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
import sys
import core.exchange.ccxt_gateway  # installs the lean packages first
import ccxt, ccxt.async_support

def loaded():
    return {m.split(".")[2] for m in sys.modules if m.startswith("ccxt.async_support.") and m.count(".") == 2}

assert not loaded() & {"binance", "kraken", "okx"}, loaded()  # no exchange until one is used
assert ccxt.async_support.binance.__name__ == "binance"
assert "binance" in loaded() and "kraken" not in loaded() and "okx" not in loaded()
assert ccxt.async_support.kraken.__name__ == "kraken"  # others still load on first use
assert issubclass(ccxt.InvalidOrder, ccxt.BaseError) and ccxt.__version__
assert "binance" in ccxt.async_support.exchanges
"""


def test_only_the_used_exchange_is_imported():
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
