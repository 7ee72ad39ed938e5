"""Baselines a backtest is judged against: buy-and-hold, and random entries through the same engine.

Why. A strategy's return alone says little: the market may have carried it (buy-and-hold), or the
engine's exits, sizing and costs may decide the outcome whatever the entries are. Random entries
run through the very same engine -- universe, data-quality checks, risk gate, sizing, exits,
fees, slippage -- and differ from the strategy only in *which* pairs are entered; the strategy's
percentile among many random seeds is an empirical p-value for "the signals carry information".

Two random baselines, both transforms of the backtest's precomputed signal table (the engine
runs unchanged over a table whose opportunities were replaced):

- ``random`` (pair choice): at each cycle where the strategies produced k opportunities, k
  pairs drawn at random among the pairs eligible then (in the universe, passing the data-quality
  checks, with an ATR). Timing and count of entries equal the strategy's; only the choice of
  pair is random. Each draw takes over the score and strategy label of the opportunity in the
  same rank, so ``by_strategy`` of a random run compares with the strategy's own, slot by slot.
- ``random_timing``: every eligible (pair, cycle) entered with one probability, chosen so the
  expected number of opportunities over the run equals the strategy's; each entry copies the
  score, label and exit geometry of one of the strategy's opportunities drawn at random. Tests
  timing as well as choice.

Stop and target of a random entry: the strategy's own exit geometry, so that only the entries
differ. Each real opportunity's stop and target are expressed as distances from its price in
ATR14 of its own pair at that cycle (``opp_stop_atr``, ``opp_target_atr``); a random entry puts
the same distances, in the drawn pair's ATR14, around the drawn pair's close -- the opportunity
whose slot it takes (``random``) or the one it was drawn from (``random_timing``). The risk gate
clamps them exactly as it clamps real signals; trailing and time exits are the engine's, the same
for every entry. The JSON's ``stop_atr`` / ``target_atr`` are the medians of that geometry.

Seeds run in worker processes (spawn-safe): each worker loads the candles once, then runs the
engine per seed. A seed gives the same numbers on any worker and any machine. A random run whose
account sits in cash under a drawdown halt nothing will lift stops there (``simulate``'s
``settle_when_halted``: the same numbers, most of the time saved on halted runs).

Buy-and-hold: BTC (``BTC/<quote>``) and the equal-weight universe (every pair in the universe at
the first cycle, equal money, held to the last cycle; a pair without newer candles keeps its
last close), bought at the first cycle's close and sold at the last, paying what the paper
executor charges a fill without an order book on both legs: half of ``paper.spread_pct``, the
slippage and the fee.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.models import Opportunity, ScanResult

STOP_ATR, TARGET_ATR, ATR_PERIOD = 2.0, 4.0, 14  # geometry only where no ATR measures an opportunity's
MODES = ("random", "random_timing")
BAND_POINTS = 240  # equity samples per random run kept for the report's band


# --- inputs: what a random table needs from the real one (small and picklable) -----------------

@dataclass
class Inputs:
    symbols: tuple[str, ...]
    timeframe: str
    times: np.ndarray  # (N,) cycle times
    universe: np.ndarray  # (P, N) bool: pairs the universe holds
    ok: np.ndarray  # (P, N) bool: universe pairs that pass the data-quality checks
    close: np.ndarray  # (P, N) close of the last closed candle (NaN: none)
    atr: np.ndarray  # (P, N) ATR14 then (NaN: not enough history)
    opp_cycle: np.ndarray  # (M,) cycle of each real opportunity, by cycle then rank
    opp_score: np.ndarray  # (M,)
    opp_strategy: np.ndarray  # (M,) index into ``strategies``
    strategies: tuple[str, ...]
    opp_stop_atr: np.ndarray  # (M,) (price - stop) / ATR14 of the opportunity's pair then
    opp_target_atr: np.ndarray  # (M,) (target - price) / ATR14 of the opportunity's pair then

    @property
    def eligible(self) -> np.ndarray:
        return self.ok & np.isfinite(self.atr) & (self.atr > 0) & np.isfinite(self.close) & (self.close > 0)


ATR_GROUP = 16  # pairs per ATR matrix in ``inputs_of``


def inputs_of(table) -> Inputs:
    """Gather the random tables' inputs from a ``SignalTable``."""
    from core.scan.scanner import Indicators

    P, N = table.ok.shape
    close = np.full((P, N), np.nan)
    atr = np.full((P, N), np.nan)
    for lo in range(0, P if N else 0, ATR_GROUP):
        # the scanner's own ATR over each pair's whole history, a few pairs at a time (the candle
        # matrix of every pair at once would be the report's largest allocation)
        frame = table.sig.group(lo, min(P, lo + ATR_GROUP))
        full = Indicators(frame.view).atr(ATR_PERIOD)
        L = frame.length
        for g in range(len(frame.rows)):
            p = lo + g
            k = table.k[p]
            has = k >= 0
            n = int(table.sig.n[p])
            kk = np.maximum(k, 0)
            close[p] = np.where(has, table.sig.rows[p][kk, 4] if n else np.nan, np.nan)
            atr[p] = np.where(has, full[g, L - n + kk], np.nan)
    names = tuple(dict.fromkeys(list(table.cfg.strategies.enabled) + [o.strategy for o in table.ranked]))
    cyc, score, strat, opps = [], [], [], []
    at = table.opp_at
    for i in np.flatnonzero((at >= 0).any(axis=0)).tolist():
        col = at[:, i]
        for j in np.sort(col[col >= 0]).tolist():
            o = table.ranked[j]
            cyc.append(i), score.append(o.score), strat.append(names.index(o.strategy)), opps.append(o)
    strat_a = np.asarray(strat, dtype=np.int64)
    return Inputs(tuple(table.symbols), table.scanner.signal_tf, np.asarray(table.times), table.universe.copy(),
                  table.ok.copy(), close, atr, np.asarray(cyc, dtype=np.int64), np.asarray(score, dtype=float),
                  strat_a, names, *exit_geometry(opps, np.asarray(cyc, dtype=np.int64), strat_a, table.symbols, atr))


# --- random tables --------------------------------------------------------------------------------

def rng_for(seed: int, mode: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), MODES.index(mode)])


def exit_geometry(opps: list[Opportunity], cycle: np.ndarray, strategy: np.ndarray, symbols, atr: np.ndarray,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Each opportunity's stop and target distance from its price in ATR14 of its own pair at its
    cycle. One without a usable ATR takes its strategy's median (or ``STOP_ATR`` / ``TARGET_ATR``)."""
    pos = {s: p for p, s in enumerate(symbols)}
    m = len(opps)
    price = np.fromiter((o.price for o in opps), float, m)
    a = atr[np.fromiter((pos[o.symbol] for o in opps), np.int64, m), cycle] if m else np.empty(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        stop = (price - np.fromiter((o.stop for o in opps), float, m)) / a
        target = (np.fromiter((o.target for o in opps), float, m) - price) / a
    for values, fallback in ((stop, STOP_ATR), (target, TARGET_ATR)):
        bad = ~(np.isfinite(values) & (values > 0))
        for s in np.unique(strategy[bad]).tolist():
            good = values[(strategy == s) & ~bad]
            values[bad & (strategy == s)] = float(np.median(good)) if len(good) else fallback
    return stop, target


def draw(inputs: Inputs, seed: int, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random entries as arrays (cycle, pair, source), in serving order (cycle, then rank); ``source``
    is the real opportunity whose score, strategy label and exit geometry the entry takes."""
    rng = rng_for(seed, mode)
    elig = inputs.eligible
    if mode == "random":
        # a random key per (cycle, pair), ineligible pairs last: a cycle's k smallest keys are k
        # pairs drawn without replacement among the eligible ones, and take ranks 0..k-1
        cycles, starts, counts = np.unique(inputs.opp_cycle, return_index=True, return_counts=True)
        sub = elig[:, cycles].T
        keys = rng.random(sub.shape)
        keys[~sub] = np.inf
        order = np.argsort(keys, axis=1, kind="stable")
        take = np.minimum(counts, sub.sum(axis=1))
        rank = np.arange(sub.shape[1])[None, :]
        chosen = rank < take[:, None]
        row, r = np.nonzero(chosen)
        src = starts[row] + r  # the real opportunity whose rank the draw takes
        return cycles[row], order[row, r], src
    if mode != "random_timing":
        raise ValueError(f"unknown baseline mode {mode!r}")
    cells = int(elig.sum())
    m = len(inputs.opp_cycle)
    empty = np.empty(0, dtype=np.int64)
    if not cells or not m:
        return empty, empty, empty
    q = min(1.0, m / cells)
    hit = (elig & (rng.random(elig.shape) < q)).T  # (N, P)
    i, p = np.nonzero(hit)
    which = rng.integers(0, m, size=len(i))
    score = inputs.opp_score[which]
    tie = rng.random(len(i))
    o = np.lexsort((tie, -score, i))  # per cycle, the scanner's order: best score first
    return i[o], p[o], which[o]


class RandomTable:
    """Serves a random baseline's scans the way ``SignalTable`` serves the strategies' (``index``,
    ``result(i)``): the same universe and skipped pairs, random opportunities."""

    def __init__(self, inputs: Inputs, seed: int, mode: str) -> None:
        self.inputs, self.seed, self.mode = inputs, seed, mode
        self.times = inputs.times
        self.index = {int(t): i for i, t in enumerate(self.times)}
        self.symbols = inputs.symbols
        cyc, pair, src = draw(inputs, seed, mode)
        score, strat = inputs.opp_score[src], inputs.opp_strategy[src]
        c, a = inputs.close[pair, cyc], inputs.atr[pair, cyc]
        stop, target = c - inputs.opp_stop_atr[src] * a, c + inputs.opp_target_atr[src] * a
        tf, names, syms = inputs.timeframe, inputs.strategies, inputs.symbols
        reason = f"{mode} baseline, seed {seed}"
        self.ranked = [Opportunity(syms[p], names[s], "buy", sc, px, st, tg, reason, tf)
                       for p, s, sc, px, st, tg in zip(pair.tolist(), strat.tolist(), score.tolist(), c.tolist(),
                                                       stop.tolist(), target.tolist())]
        self.opp_at = np.full(inputs.ok.shape, -1, dtype=np.int32)
        self.opp_at[pair, cyc] = np.arange(len(pair), dtype=np.int32)
        bounds = np.searchsorted(cyc, np.arange(len(self.times) + 1))
        self.bounds = bounds.tolist()

    def result(self, i: int) -> ScanResult:
        members = np.flatnonzero(self.inputs.universe[:, i])
        bad = members[~self.inputs.ok[members, i]]
        skipped = {self.symbols[p]: "data quality" for p in bad.tolist()}
        return ScanResult(pairs_scanned=len(members) - len(skipped), pairs_skipped=len(skipped), skipped=skipped,
                          duration_s=0.0, opportunities=self.ranked[self.bounds[i]:self.bounds[i + 1]],
                          ts_ms=int(self.times[i]))


# --- one seed -------------------------------------------------------------------------------------

def summary(result) -> dict[str, Any]:
    """The figures a baseline distribution is made of (and a thin equity curve for the band)."""
    from core.trading.stats import group_stats, trade_stats

    s = trade_stats(result.closed, result.curve, result.cfg.paper.starting_balance)
    groups = group_stats(result.closed, lambda p: p.strategy)
    curve = result.curve
    step = max(1, len(curve) // BAND_POINTS)
    thin = [(int(t), float(e)) for t, e in curve[::step]] + ([(int(curve[-1][0]), float(curve[-1][1]))]
                                                             if curve and (len(curve) - 1) % step else [])
    return {"return": s.return_pct, "profit_factor": s.profit_factor, "trades": s.trades, "win_rate": s.win_rate,
            "max_drawdown": s.max_drawdown, "end_equity": float(s.end_equity), "sharpe": s.sharpe,
            "halted": next((ts for ts, h in result.halts if h.startswith("drawdown")), None),
            "by_strategy": {k: {"pnl": v["pnl"], "profit_factor": v["profit_factor"], "trades": v["trades"]}
                            for k, v in groups.items()},
            "curve": thin}


async def run_seed(loaded, inputs: Inputs, seed: int, mode: str, settle: bool = True) -> dict[str, Any]:
    from core.backtest.runner import simulate

    result = await simulate(loaded, RandomTable(inputs, seed, mode), settle_when_halted=settle)
    out = summary(result)
    out.update(seed=seed, mode=mode)
    return out


# --- worker processes -----------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def portable(cfg) -> tuple[dict[str, Any], str]:
    """The config as plain data for a worker (a ``Config`` holds mapping proxies, which do not pickle)
    and its source; refuses a config that would not come back identical."""
    from core.config import to_dict

    doc = to_dict(cfg)
    if to_dict(_rebuilt((doc, cfg.source))) != doc:  # (a list and a tuple are the same setting)
        raise ValueError("baseline workers: the configuration does not survive a round trip through plain data")
    return doc, cfg.source


def _rebuilt(portable_cfg: tuple[dict[str, Any], str]):
    from dataclasses import replace

    from core.config import config_from_dict

    doc, source = portable_cfg
    return replace(config_from_dict(doc), source=source)


def _init_worker(cfg_doc: tuple[dict[str, Any], str], spec, inputs: Inputs) -> None:
    """Once per worker: load the candles (the seeds then only re-run the engine)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it cancels the pool
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)
    from core.backtest.runner import load

    cfg = _rebuilt(cfg_doc)
    _WORKER["loaded"] = asyncio.run(load(cfg, spec))
    _WORKER["inputs"] = inputs


def _run_task(seed: int, mode: str) -> dict[str, Any]:
    return asyncio.run(run_seed(_WORKER["loaded"], _WORKER["inputs"], seed, mode))


def workers_for(tasks: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(tasks, cores))


def run_random(cfg, spec, inputs: Inputs, seeds: int, modes=MODES, workers: int | None = None,
               on_done=None) -> list[dict[str, Any]]:
    """Every (mode, seed) in worker processes; results in task order (deterministic)."""
    from dataclasses import replace

    # workers re-load with the run's own config; ``spec.strategies`` already applied in cfg
    spec = replace(spec, db=None, verify=0)
    tasks = [(seed, mode) for mode in modes for seed in range(seeds)]
    if not tasks:
        return []
    n = workers or workers_for(len(tasks))
    ctx = multiprocessing.get_context("spawn")
    results: list[dict[str, Any] | None] = [None] * len(tasks)
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_init_worker,
                             initargs=(portable(cfg), spec, inputs)) as pool:
        futures = {pool.submit(_run_task, *t): j for j, t in enumerate(tasks)}
        try:
            from concurrent.futures import as_completed

            for f in as_completed(futures):
                results[futures[f]] = f.result()
                if on_done is not None:
                    on_done(sum(r is not None for r in results), len(tasks))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return [r for r in results if r is not None]


# --- distributions --------------------------------------------------------------------------------

def _q(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def distribution(values: list[float | None], actual: float | None) -> dict[str, Any]:
    """min, p5, median, p95, max of ``values`` and where ``actual`` stands among them.

    ``percentile``: share of seeds below the strategy (ties count half), 0..100. ``p_value``:
    (1 + seeds at or above the strategy) / (1 + seeds), the chance of doing at least as well by
    picking at random. ``None`` values (a profit factor without a losing trade) are left out."""
    v = sorted(float(x) for x in values if x is not None)
    out: dict[str, Any] = {"values": [None if x is None else float(x) for x in values],
                           "min": v[0] if v else None, "p5": _q(v, 5), "median": _q(v, 50), "p95": _q(v, 95),
                           "max": v[-1] if v else None, "percentile": None, "p_value": None}
    if v and actual is not None:
        below = sum(x < actual for x in v)
        ties = sum(x == actual for x in v)
        out["percentile"] = 100.0 * (below + 0.5 * ties) / len(v)
        out["p_value"] = (1 + len(v) - below) / (1 + len(v))
    return out


def random_block(runs: list[dict[str, Any]], actual_return: float, actual_pf: float | None) -> dict[str, Any]:
    """The JSON block of one random baseline mode: the return and profit factor distributions
    (their summary figures repeated at the top level for the return)."""
    block = {"seeds": len(runs), "returns": [r["return"] for r in runs],
             "return": distribution([r["return"] for r in runs], actual_return),
             "profit_factor": distribution([r["profit_factor"] for r in runs], actual_pf),
             "trades": distribution([r["trades"] for r in runs], None),
             "halted": sum(r["halted"] is not None for r in runs)}
    ret = block["return"]
    block.update({k: ret[k] for k in ("min", "p5", "median", "p95", "max", "percentile", "p_value")})
    return block


# --- buy-and-hold --------------------------------------------------------------------------------

def buy_and_hold(inputs: Inputs, quote: str, fee: float, slippage: float, spread: float = 0.0) -> dict[str, Any]:
    """BTC and the equal-weight universe from the first cycle's close to the last's, costs included:
    as the paper executor fills, the buy at close x (1 + spread/2)(1 + slippage) plus the fee on
    the value, the sell at close x (1 - spread/2)(1 - slippage) less the fee."""
    half = spread / 2
    cost = ((1 - half) * (1 - slippage) * (1 - fee)) / ((1 + half) * (1 + slippage) * (1 + fee))
    close = inputs.close
    N = close.shape[1] if close.ndim == 2 else 0
    out: dict[str, Any] = {}

    def filled(row: np.ndarray) -> np.ndarray:  # a pair without newer candles keeps its last close
        idx = np.where(np.isfinite(row), np.arange(len(row)), 0)
        np.maximum.accumulate(idx, out=idx)
        return row[idx]

    btc = f"BTC/{quote}"
    if N and btc in inputs.symbols:
        row = filled(close[inputs.symbols.index(btc)])
        if np.isfinite(row[0]) and row[0] > 0:
            rel = row / row[0]
            out["btc"] = {"symbol": btc, "return": float(rel[-1] * cost - 1), "curve": _thin(inputs.times, rel)}
    if N:
        members = np.flatnonzero(inputs.universe[:, 0] & np.isfinite(close[:, 0]) & (close[:, 0] > 0))
        if len(members):
            rel = np.mean([filled(close[p]) / close[p, 0] for p in members], axis=0)
            out["equal_weight"] = {"pairs": int(len(members)), "return": float(rel[-1] * cost - 1),
                                   "curve": _thin(inputs.times, rel)}
    for v in out.values():
        v["costs"] = "paper fee, slippage and half the spread on the buy and the sell"
    return out


def _thin(times: np.ndarray, rel: np.ndarray) -> list[tuple[int, float]]:
    step = max(1, len(times) // BAND_POINTS)
    idx = list(range(0, len(times), step))
    if idx[-1] != len(times) - 1:
        idx.append(len(times) - 1)
    return [(int(times[i]), float(rel[i])) for i in idx]


# --- the whole set, as the report shows it ---------------------------------------------------------

DEFAULT_SEEDS = 8


@dataclass
class Baselines:
    doc: dict[str, Any]  # the ``baselines`` JSON block
    runs: dict[str, list[dict[str, Any]]]  # mode -> per-seed summaries (with thin equity curves)
    hold_curves: dict[str, list[tuple[int, float]]]  # "btc" / "equal_weight" -> (time, value per 1 unit)


def compute(result, spec, seeds: int, modes=MODES, workers: int | None = None, on_done=None) -> Baselines:
    """Buy-and-hold and ``seeds`` random runs per mode for ``result`` (a finished strategy backtest)."""
    from core.backtest.report import by_strategy, stats_of
    from core.backtest.runner import drawdown_halt

    inputs = inputs_of(result.table)
    cfg = result.cfg
    hold = buy_and_hold(inputs, cfg.universe.quote, float(cfg.paper.fee_pct), float(cfg.paper.slippage_pct),
                        float(cfg.paper.spread_pct))
    curves = {k: v.pop("curve") for k, v in hold.items()}
    halt = drawdown_halt(result)
    if halt is not None:  # what the market did while the halted account sat in cash
        i = min(int(np.searchsorted(inputs.times, halt)), len(inputs.times) - 1)
        for k, v in hold.items():
            a, b = _value_at(inputs, k, i, cfg.universe.quote), _value_at(inputs, k, len(inputs.times) - 1,
                                                                           cfg.universe.quote)
            v["after_halt"] = None if not a or b is None else b / a - 1
    s = stats_of(result)
    doc: dict[str, Any] = {"buy_and_hold": hold, "atr_period": ATR_PERIOD,  # the random entries' exit geometry
                           "stop_atr": _median(inputs.opp_stop_atr), "target_atr": _median(inputs.opp_target_atr)}
    runs: dict[str, list[dict[str, Any]]] = {}
    if seeds > 0:
        all_runs = run_random(cfg, spec, inputs, seeds, modes, workers=workers, on_done=on_done)
        groups = by_strategy(result)
        for mode in modes:
            runs[mode] = [r for r in all_runs if r["mode"] == mode]
            doc[mode] = random_block(runs[mode], s.return_pct, s.profit_factor)
        doc["by_strategy"] = {
            name: {"pnl": g["pnl"], "profit_factor": g["profit_factor"], "trades": g["trades"],
                   **{mode: per_strategy(runs[mode], name, g) for mode in modes}}
            for name, g in groups.items()}
    return Baselines(doc, runs, curves)


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if len(values) else None


def per_strategy(runs: list[dict[str, Any]], name: str, g: dict[str, Any]) -> dict[str, Any]:
    """Random entries in this strategy's slots vs the strategy's own trades in the same run."""
    empty = {"pnl": 0.0, "profit_factor": None, "trades": 0}
    rs = [r["by_strategy"].get(name, empty) for r in runs]
    return {"pnl": distribution([x["pnl"] for x in rs], g["pnl"]),
            "profit_factor": distribution([x["profit_factor"] for x in rs], g["profit_factor"]),
            "trades": distribution([x["trades"] for x in rs], None)}


def _value_at(inputs: Inputs, which: str, i: int, quote: str) -> float | None:
    """The buy-and-hold line's value (per unit bought at the first cycle) at cycle ``i``."""
    close = inputs.close
    if which == "btc":
        p = inputs.symbols.index(f"BTC/{quote}")
        row = close[p, :i + 1]
        ok = np.flatnonzero(np.isfinite(row))
        return float(row[ok[-1]] / close[p, 0]) if len(ok) else None
    members = np.flatnonzero(inputs.universe[:, 0] & np.isfinite(close[:, 0]) & (close[:, 0] > 0))
    vals = []
    for p in members:
        row = close[p, :i + 1]
        ok = np.flatnonzero(np.isfinite(row))
        vals.append(row[ok[-1]] / close[p, 0])
    return float(np.mean(vals)) if vals else None
