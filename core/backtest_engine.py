"""The engine's surroundings in a backtest: the replay gateway and paper executor, minus repeated work.

Both classes return what their parents return (the tests compare them); they only avoid work a
backtest would repeat thousands of times:

- ``BacktestGateway.fetch_tickers`` reads each pair's ticker from the signal table (computed for
  every cycle at once) instead of two binary searches and three reductions per symbol and call
  (the engine asks for the tickers of every signalled pair each cycle). Last price, its time and
  the 24 h high/low are exact; the 24 h quote volume is a prefix sum, equal to the gateway's to
  ~1e-12 relative (nothing in a cycle reads it; the universe uses exact figures near its cut-off);
- ``BacktestPaperExecutor.update_marks`` converts a pair's float price to Decimal once per new
  price. The engine refreshes the portfolio before every opportunity it considers, and the
  parent converts every price of the cycle each time: with ~20 signals a cycle over 5,000 cycles
  that was 3.8 million conversions, most of a backtest's run time.
"""
from __future__ import annotations

from decimal import Decimal

from core.models import Ticker
from core.paper import PaperExecutor
from core.portfolio import to_decimal
from core.replay import ReplayGateway


class BacktestGateway(ReplayGateway):
    """ReplayGateway whose tickers come from a ``SignalTable``'s per-cycle indices when it has them."""

    table = None  # core.backtest_signals.SignalTable, attached once computed

    async def fetch_tickers(self, symbols: list[str] | None = None) -> dict[str, Ticker]:
        table = self.table
        i = None if table is None or symbols is None else table.index.get(self.clock.now_ms())
        if i is None:
            return await super().fetch_tickers(symbols)
        out = {}
        slow = []
        tf_ms = table.sig.tf_ms
        for sym in symbols:
            p = table.pos.get(sym)
            if p is None:
                slow.append(sym)
                continue
            k = int(table.k[p, i])
            if k < 0:
                continue  # not listed yet at this time
            hi, lo = float(table.tick_high[p, i]), float(table.tick_low[p, i])
            out[sym] = Ticker(sym, int(table.sig.rows[p][k, 0]) + tf_ms, float(table.tick_last[p, i]),
                              high=None if hi != hi else hi, low=None if lo != lo else lo,
                              quote_volume=float(table.tick_qv[p, i]))
        if slow:
            out.update(await super().fetch_tickers(slow))
        return out


class BacktestPaperExecutor(PaperExecutor):
    """PaperExecutor with the float -> Decimal conversion of unchanged prices remembered."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._converted: dict[str, tuple[float, Decimal]] = {}
        self._snapshot: tuple[dict, dict[str, Decimal]] | None = None

    def update_marks(self, prices: dict[str, float]) -> dict[str, Decimal]:
        snap = self._snapshot
        if snap is None or snap[0] != prices:  # the engine passes one cycle's prices many times
            seen = self._converted
            marks = {}
            for sym, p in prices.items():
                if p is not None and p > 0:
                    last = seen.get(sym)
                    if last is None or last[0] != p:
                        last = seen[sym] = (p, to_decimal(p))
                    marks[sym] = last[1]
            snap = self._snapshot = (dict(prices), marks)
        self.prices.update(snap[1])
        for pos in self._open.values():
            px = self.prices.get(pos.symbol)
            if px is not None and pos.amount > 0 and px > pos.highest:
                pos.highest = px
        return self.prices
