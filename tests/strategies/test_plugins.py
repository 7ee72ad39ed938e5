"""Strategy plugins on real data: score ranges, stops/targets, the documented scoring rules
(re-derived with TA-Lib as the oracle), parameter validation and plugin discovery."""
from __future__ import annotations

import importlib
import sys
import textwrap

import numpy as np
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

import strategies as strategies_pkg
from core.config import ConfigError, config_from_dict
from core.scan.scanner import Scanner
from dataclasses import replace

from strategies import registry
from strategies.base import BREADTH_MIN, STRENGTH_CANDLES, TREND_CANDLES, MarketState, ScanInput
from tests.support.ohlcv import HOUR, scan_input, series, store_at

# every 12.5 days from mid-January to mid-July 2021: rallies, the May crash, chop
TIMES = [1610700000000 + k * 300 * HOUR for k in range(15)]


def ramp(x: float, zero: float, full: float) -> float:
    if x != x:
        return 0.0
    return min(1.0, max(0.0, (x - zero) / (full - zero)))


def expected_trend(s: dict, s4: dict, strength: float, p) -> float:
    c, h, lo = s["close"], s["high"], s["low"]
    c4, h4, lo4 = s4["close"], s4["high"], s4["low"]
    ef, es = talib.EMA(c4, p.ema_fast)[-1], talib.EMA(c4, p.ema_slow)[-1]
    adx4 = talib.ADX(h4, lo4, c4, p.adx_period)[-1]
    if p.entry == "breakout":
        entry = c4[-1] > h4[-p.breakout_period - 1:-1].max()
    else:
        entry = c[-1] < talib.EMA(c, p.pullback_ema)[-1] and c[-1] > s["open"][-1]
    if not (ef > es and c4[-1] > ef and adx4 >= p.adx_min and entry and talib.RSI(c, p.rsi_period)[-1] <= p.rsi_max
            and strength >= p.strength_min and talib.ATR(h, lo, c, p.atr_period)[-1] > 0):
        return 0.0
    return 60 + 20 * ramp(adx4, p.adx_min, p.adx_full) + 20 * ramp(strength, p.strength_min, 1)


def zscore(v: np.ndarray, n: int) -> float:
    base = v[-n - 1:-1]
    sd = base.std()
    return (v[-1] - base.mean()) / sd if sd > 0 else float("nan")


def expected_mean_reversion(s: dict, strength: float, p) -> float:
    c, h, lo = s["close"], s["high"], s["low"]
    up, mid, low = (b[-1] for b in talib.BBANDS(c, p.bb_period, p.bb_std, p.bb_std))
    pctb = (c[-1] - low) / (up - low) if up > low else float("nan")
    rsi = talib.RSI(c, p.rsi_period)[-1]
    band, osold = 35 * ramp(pctb, 0.2, 0.0), 35 * ramp(rsi, p.rsi_oversold + 10, p.rsi_oversold)
    strong_down = talib.ADX(h, lo, c, p.adx_period)[-1] >= p.adx_strong and c[-1] < talib.EMA(c, p.trend_period)[-1]
    if band + osold == 0 or strong_down or not talib.ATR(h, lo, c, p.atr_period)[-1] > 0:
        return 0.0
    if p.uptrend_period and not c[-1] > talib.SMA(c, p.uptrend_period)[-1]:
        return 0.0  # a dip below the long mean is a falling knife, not a dip
    if strength > p.strength_max:
        return 0.0
    return band + osold + 20 * ramp(zscore(s["volume"], p.volume_period), 0, p.volume_z) + 10 * (c[-1] > s["open"][-1])


def expected_momentum(s: dict, s4: dict, strength: float, p) -> float:
    c, h, lo = s["close"], s["high"], s["low"]
    rsi = talib.RSI(c, p.rsi_period)[-1]
    if p.entry == "breakout":
        entry = c[-1] > h[-p.breakout_period - 1:-1].max()
    else:
        entry = rsi <= p.pullback_rsi and c[-1] > s["open"][-1]
    if not (strength >= p.strength_min and talib.ROC(c, p.roc_period)[-1] > 0 and c[-1] > talib.SMA(c, p.trend_period)[-1]
            and entry and rsi <= p.rsi_max and s4["close"][-1] > talib.EMA(s4["close"], p.higher_ema)[-1]
            and talib.ATR(h, lo, c, p.atr_period)[-1] > 0):
        return 0.0
    return 60 + 25 * ramp(strength, p.strength_min, 1) + 15 * ramp(zscore(s["volume"], p.volume_period), 0, p.volume_z)


def ranked_input(store) -> ScanInput:
    """``scan_input`` with the scanner's relative strength of every pair (risk on: the regime
    has its own test), so the strength gates are exercised on real rankings."""
    from core.scan.scanner import market_state

    data = scan_input(store)
    sv = store.view("1h")
    m = market_state(sv.symbols, sv.close, sv.counts >= 250)
    n = len(sv.symbols)
    return ScanInput(data.symbols, data.signal, data.higher, MarketState(m.strength, np.ones(n), np.ones(n, bool)))


@pytest.fixture(scope="module")
def default_strategies():
    enabled = ["trend_following", "mean_reversion", "momentum"]  # every shipped one, enabled or not
    return {s.name: s for s in registry.build(config_from_dict({"strategies": {"enabled": enabled}}).strategies)}


@pytest.fixture(scope="module")
def firing_times(default_strategies):
    """Every 12 h from mid-January to mid-July 2021, checked like ``TIMES`` (scores 0..100, stop
    below and target above the close, a reason); returns the times at which each strategy made
    the cut (score >= 60). The defaults are selective on purpose (a few signals a week), so a
    sparse grid would miss them."""
    fired: dict[str, list[int]] = {name: [] for name in default_strategies}
    for k in range(0, 180 * 24, 12):
        end = TIMES[0] + k * HOUR
        data = ranked_input(store_at(end))
        close = data.signal.close[:, -1]
        for name, strat in default_strategies.items():
            sig = strat.evaluate(data)
            assert sig.side == "buy"
            assert np.all(np.isfinite(sig.score)) and np.all((sig.score >= 0) & (sig.score <= 100)), name
            on = sig.score > 0
            assert np.all(sig.stop[on] < close[on]) and np.all(sig.target[on] > close[on]), name
            for i in np.flatnonzero(on)[:3]:
                assert isinstance(sig.explain(int(i)), str) and sig.explain(int(i))
            if (sig.score >= 60).any():
                fired[name].append(end)
    return fired


def test_scores_stops_and_targets_on_real_data(firing_times):
    assert all(len(t) >= 3 for t in firing_times.values()), firing_times  # every strategy makes the cut


def test_scores_follow_the_documented_rules(default_strategies, firing_times):
    """Each strategy's score for a pair equals the documented formula computed with TA-Lib."""
    checked = {name: [0, 0] for name in default_strategies}  # [non-zero, zero] cases seen
    when = sorted(set(TIMES[::2]) | {t for times in firing_times.values() for t in times[:3]})
    for end in when:
        store = store_at(end)
        data = ranked_input(store)
        rs = data.regime().strength
        sv, hv = store.view("1h"), store.view("4h")
        sigs = {name: s.evaluate(data) for name, s in default_strategies.items()}
        for i in range(len(sv.symbols)):
            if sv.counts[i] < 200 or hv.counts[i] < 60:
                continue
            s1, s4 = series(sv, i), series(hv, i)
            expected = {
                "trend_following": expected_trend(s1, s4, rs[i], default_strategies["trend_following"].params),
                "mean_reversion": expected_mean_reversion(s1, rs[i], default_strategies["mean_reversion"].params),
                "momentum": expected_momentum(s1, s4, rs[i], default_strategies["momentum"].params),
            }
            for name, want in expected.items():
                assert sigs[name].score[i] == pytest.approx(want, abs=1e-6), (name, sv.symbols[i], end)
                checked[name][int(want == 0)] += 1
    assert all(nz >= 3 and z >= 10 for nz, z in checked.values()), checked


def test_every_default_strategy_stands_aside_in_a_risk_off_market(default_strategies, firing_times):
    """The regime filter: the same candles scored in a risk-off market give no signal at all, and
    with ``regime_filter`` off the scores are the risk-on ones."""
    seen = set()
    for end in sorted(set(TIMES) | {t for times in firing_times.values() for t in times[:2]}):
        data = ranked_input(store_at(end))
        n = len(data.symbols)
        off = ScanInput(data.symbols, data.signal, data.higher,
                        MarketState(data.regime().strength, np.zeros(n), np.zeros(n, bool)))
        for name, strat in default_strategies.items():
            on_scores = strat.evaluate(data).score
            if not (on_scores > 0).any():
                continue
            seen.add(name)
            assert not strat.evaluate(off).score.any(), name
            unfiltered = type(strat)(replace(strat.params, regime_filter=False))
            assert np.array_equal(unfiltered.evaluate(off).score, on_scores), name
    assert seen == set(default_strategies)


def test_market_state_on_real_data_matches_a_plain_recount():
    """Breadth, BTC's trend and relative strength from the scanner equal a per-pair recount with
    TA-Lib's SMA and numpy (the May 2021 crash is risk-off, the January rally risk-on)."""
    from core.scan.scanner import market_state

    states = {}
    for label, end in (("rally", 1610700000000 + 3 * 300 * HOUR), ("crash", 1621468800000)):
        store = store_at(end)
        sv = store.view("1h")
        ok = sv.counts >= 250
        m = market_state(sv.symbols, sv.close, ok)
        ups, zs = [], []
        for i in range(len(sv.symbols)):
            if not ok[i]:
                ups.append(False)
                zs.append(np.nan)
                continue
            c = series(sv, i)["close"]
            ups.append(bool(c[-1] > talib.SMA(c, TREND_CANDLES)[-1]))
            lr = np.diff(np.log(c[-STRENGTH_CANDLES - 1:]))
            zs.append(lr.sum() / (lr.std() * np.sqrt(STRENGTH_CANDLES)))
        breadth = np.mean([u for u, k in zip(ups, ok) if k])
        assert m.breadth[0] == pytest.approx(breadth)
        btc = sv.symbols.index("BTC/USDT")
        assert m.risk_on[0] == (breadth >= BREADTH_MIN and ups[btc])
        z = np.array(zs)[ok]
        strongest = int(np.flatnonzero(ok)[np.argmax(z)])
        weakest = int(np.flatnonzero(ok)[np.argmin(z)])
        assert m.strength[strongest] == 1.0 and m.strength[weakest] == 0.0
        assert np.all(m.strength[~ok] == 0.5)
        states[label] = bool(m.risk_on[0])
    assert states == {"rally": True, "crash": False}


def test_reason_names_the_evidence(default_strategies, firing_times):
    hits = 0
    for end in sorted({t for name in ("trend_following", "momentum") for t in firing_times[name][:2]}):
        store = store_at(end)
        data = ranked_input(store)
        for name in ("trend_following", "momentum"):
            sig = default_strategies[name].evaluate(data)
            for i in np.flatnonzero(sig.score > 0)[:2]:
                reason = sig.explain(int(i))
                s1 = series(store.view("1h"), int(i))
                rsi = talib.RSI(s1["close"], 14)[-1]
                assert f"RSI {rsi:.0f}" in reason, reason
                if name == "trend_following":
                    s4 = series(store.view("4h"), int(i))
                    adx = talib.ADX(s4["high"], s4["low"], s4["close"], 14)[-1]
                    assert reason.startswith("4h EMA20>EMA50") and f"ADX {adx:.0f}" in reason, reason
                hits += 1
    assert hits >= 4


# --- parameters -------------------------------------------------------------------------------

@pytest.mark.parametrize("params, key, expected", [
    ({"trend_following": {"ema_fast": 60}}, "strategies.params.trend_following.ema_fast", "less than ema_slow"),
    ({"trend_following": {"ema_slow": "50"}}, "strategies.params.trend_following.ema_slow", "an integer"),
    ({"trend_following": {"adx_min": 50}}, "strategies.params.trend_following.adx_min", "less than adx_full"),
    ({"momentum": {"entry": "dip"}}, "strategies.params.momentum.entry", "one of"),
    ({"mean_reversion": {"bb_std": 0}}, "strategies.params.mean_reversion.bb_std", "> 0"),
    ({"mean_reversion": {"bb_period": 1}}, "strategies.params.mean_reversion.bb_period", ">= 2"),
    ({"momentum": {"roc_periode": 5}}, "strategies.params.momentum.roc_periode", "unknown key"),
    ({"momentum": [1]}, "strategies.params.momentum", "an object"),
    ({"astrology": {}}, "strategies.params.astrology", "unknown strategy"),
])
def test_bad_params_name_the_key(params, key, expected):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"strategies": {"params": params}}, "c.json")
    assert err.value.key == key and expected in str(err.value)


def test_other_strategies_config_errors():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"strategies": {"enabled": ["momentum", "momentum"]}}, "c.json")
    assert err.value.key == "strategies.enabled[1]"
    with pytest.raises(ConfigError) as err:
        config_from_dict({"strategies": {"weights": {"nope": 1}}}, "c.json")
    assert err.value.key == "strategies.weights.nope"


_PARAM_KEYS = [(name, f.name) for name in ("trend_following", "mean_reversion", "momentum")
               for f in registry.strategy_class(name).Params.__dataclass_fields__.values()]


@settings(max_examples=60, deadline=None)
@given(target=st.sampled_from(_PARAM_KEYS),
       value=st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=4),
                       st.floats(allow_nan=False, allow_infinity=False), st.lists(st.integers(), max_size=2)))
def test_any_param_value_validates_or_names_its_key(target, value):
    name, param = target
    data = {"strategies": {"enabled": [name], "params": {name: {param: value}}}}
    try:
        cfg = config_from_dict(data, "c.json")
    except ConfigError as exc:
        own = f"strategies.params.{name}.{param}"
        if exc.key != own:  # a rule between two fields (rsi_min < rsi_max) names the other one, and this value
            other = exc.key.rsplit(".", 1)[-1]
            assert exc.key == f"strategies.params.{name}.{other}" and (name, other) in _PARAM_KEYS, exc.key
            assert f" {param} (" in str(exc), str(exc)
        assert str(exc).startswith(f"c.json: {exc.key}: ")
    else:
        built = {s.name: s for s in registry.build(cfg.strategies)}
        assert getattr(built[name].params, param) == value


def test_valid_params_reach_the_strategy():
    cfg = config_from_dict({"strategies": {"enabled": ["trend_following"], "params": {"trend_following": {"ema_fast": 10, "ema_slow": 30}}}})
    tf = {s.name: s for s in registry.build(cfg.strategies)}["trend_following"]
    assert (tf.params.ema_fast, tf.params.ema_slow) == (10, 30)
    sig = tf.evaluate(ranked_input(store_at(TIMES[3])))
    assert sig.explain(int(np.argmax(sig.score))).startswith("4h EMA10>EMA30")


# --- discovery --------------------------------------------------------------------------------

PLUGIN = '''
    """Test plugin: every pair whose last candle closed up."""
    from dataclasses import dataclass

    import numpy as np

    from core.fields import opt
    from strategies.base import Signals, Strategy, last


    @dataclass(frozen=True)
    class Params:
        points: float = opt(70.0, "score of an up candle", min=0, max=100)


    class GreenCandle(Strategy):
        Params = Params

        def min_candles(self):
            return 2

        def evaluate(self, data):
            c, o = last(data.signal.close), last(data.signal.open)
            score = np.where(c > o, self.params.points, 0.0)
            return Signals(score, c * 0.95, c * 1.1, lambda i: f"green candle {c[i]:g} > {o[i]:g}")
'''


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A directory on the strategies package path, as if files were dropped into strategies/."""
    monkeypatch.setattr(strategies_pkg, "__path__", [*strategies_pkg.__path__, str(tmp_path)])
    importlib.invalidate_caches()
    yield tmp_path
    for mod in [m for m in sys.modules if m.startswith("strategies.") and m.split(".")[1].startswith("zz_")]:
        del sys.modules[mod]


def test_registry_discovers_a_dropped_in_strategy(plugin_dir):
    (plugin_dir / "zz_green_candle.py").write_text(textwrap.dedent(PLUGIN))
    importlib.invalidate_caches()
    assert "zz_green_candle" in registry.available()
    cfg = config_from_dict({"strategies": {"enabled": ["zz_green_candle"], "params": {"zz_green_candle": {"points": 80}}},
                            "scanner": {"confirm_timeframe": None, "min_opportunity_score": 0.5}})
    end = TIMES[4]
    store = store_at(end)
    result = Scanner(cfg).scan(store, end)
    assert result.opportunities and {o.strategy for o in result.opportunities} == {"zz_green_candle"}
    up = store.view("1h").close[:, -1] > store.view("1h").open[:, -1]
    want = {s for s, u in zip(store.symbols, up) if u and s not in result.skipped}
    assert {o.symbol for o in result.opportunities} == want
    # 80, scaled by the ranking's relative-strength factor (x0.9 weakest .. x1.1 strongest)
    assert all(72 <= o.score <= 88 and o.reason.startswith("green candle") for o in result.opportunities)
    with pytest.raises(ConfigError) as err:
        config_from_dict({"strategies": {"params": {"zz_green_candle": {"points": 101}}}})
    assert err.value.key == "strategies.params.zz_green_candle.points"


def test_broken_plugin_is_a_config_error_only_when_used(plugin_dir):
    (plugin_dir / "zz_broken.py").write_text("import not_a_module_anywhere\n")
    importlib.invalidate_caches()
    config_from_dict({})  # installed but not enabled: harmless
    with pytest.raises(ConfigError) as err:
        config_from_dict({"strategies": {"enabled": ["momentum", "zz_broken"]}}, "c.json")
    assert err.value.key == "strategies.enabled[1]" and "failed to load" in str(err.value)


def test_every_strategy_param_is_documented():
    rows = registry.params_reference()
    assert {k.split(".")[2] for k, _, _ in rows} >= {"trend_following", "mean_reversion", "momentum"}
    assert all(help_text for _, _, help_text in rows)
    assert ("strategies.params.trend_following.ema_fast", "20", "higher timeframe: fast EMA period") in rows
