"""`pitrader doctor` end to end: the real CLI, the real ccxt client, the loopback emulator."""
import json
import socket

import pytest

from core.cli import main
from tests.support.emulator import running_emulator

KEY, SECRET = "emu-key-0001", "emu-secret-0001"


@pytest.fixture(scope="module")
def emu():
    with running_emulator(balances={"USDT": "1234.5"}) as e:
        yield e


@pytest.fixture
def doctor(emu, config_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # one table row per line, for the assertions
    for name in ("BINANCE_API_KEY", "BINANCE_API_SECRET", "BINANCE_TESTNET"):
        monkeypatch.delenv(name, raising=False)
    emu.faults.clear()

    def run(*extra, env: str | None = "", api_url: str | None = None, overrides=None, state_dir=None):
        cfg = config_file({"exchange": {"api_url": api_url or emu.url, "timeout_s": 1}, **(overrides or {})})
        args = ["--config", str(cfg), "--state-dir", str(state_dir or tmp_path / "state")]
        if env is not None:
            path = tmp_path / "pitrader.env"
            path.write_text(env)
            args += ["--env-file", str(path)]
        code = main(args + ["doctor", *extra])
        out = capsys.readouterr()
        return code, out.out, out.err

    yield run
    emu.faults.clear()


def rows(out: str) -> dict[str, str]:
    found = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 3 and cells[1] in ("ok", "warn", "fail", "skip"):
            found[cells[0]] = cells[1]
    return found


def test_healthy_setup_with_keys(doctor):
    code, out, err = doctor(env=f"BINANCE_API_KEY={KEY}\nBINANCE_API_SECRET={SECRET}\n")
    assert code == 0, out
    assert rows(out) == {"state directory": "ok", "numba cache": "ok", "config": "ok", "connectivity": "ok",
                         "server time": "ok", "markets": "ok", "universe": "ok", "order types": "ok", "API keys": "ok",
                         "rate limit": "ok", "notifications": "skip"}
    assert "1234.5 USDT free" in out and "126 spot markets" in out and "ready" in out
    assert "accept STOP_LOSS_LIMIT, OCO (ocoAllowed, LIMIT_MAKER)" in out
    assert SECRET not in out + err and KEY not in out + err


def test_without_keys_is_fine_for_paper(doctor):
    code, out, _ = doctor(env="")
    assert code == 0 and rows(out)["API keys"] == "ok" and "not set" in out


def test_bad_secret_fails_the_keys_check_and_prints_no_secret(doctor):
    bad = "not-the-secret-9876543210"
    code, out, err = doctor("--json", env=f"BINANCE_API_KEY={KEY}\nBINANCE_API_SECRET={bad}\n")
    assert code == 1
    doc = json.loads(out)
    verdicts = {c["check"]: c for c in doc["checks"]}
    assert not doc["ok"] and verdicts["API keys"]["verdict"] == "fail"
    assert "refused the API key or signature" in verdicts["API keys"]["detail"]
    assert all(verdicts[c]["verdict"] == "ok" for c in ("connectivity", "markets", "universe"))
    assert bad not in out + err and KEY not in out + err


def test_skewed_clock_is_a_warning(doctor, emu):
    emu.faults.clock_skew_ms = 4_000
    code, out, _ = doctor(env=f"BINANCE_API_KEY={KEY}\nBINANCE_API_SECRET={SECRET}\n")
    assert code == 0  # signed calls are corrected; the verdict tells the user to fix time sync
    r = rows(out)
    assert r["server time"] == "warn" and r["API keys"] == "ok"
    assert "behind the exchange" in out and "timedatectl" in out


def test_ip_ban_fails_rate_limit(doctor, emu):
    emu.faults.ban_418 = True
    emu.faults.retry_after_s = 30
    code, out, _ = doctor(env="")
    r = rows(out)
    assert code == 1 and r["connectivity"] == "fail" and r["rate limit"] == "fail"
    assert "banned" in out and "resume in 30 s" in out


def test_unreachable_exchange(doctor):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, _ = doctor(env="", api_url=f"http://127.0.0.1:{port}")
    r = rows(out)
    assert code == 1 and r["connectivity"] == "fail"
    assert r["markets"] == r["API keys"] == "skip"


def test_nothing_to_trade_fails_markets(doctor):
    code, out, _ = doctor(env="", overrides={"universe": {"quote": "EUR"}})
    assert code == 1 and rows(out)["markets"] == "fail" and "universe.quote" in out


def test_bad_config_exits_78_before_any_request(doctor, emu):
    mark = len(emu.requests)
    code, out, err = doctor(env="", overrides={"exchange": {"api_url": emu.url, "max_concurrency": 0}})
    assert code == 78 and "exchange.max_concurrency" in err
    assert len(emu.requests) == mark


def test_unusable_state_dir_and_numba_cache_are_not_ready(doctor, tmp_path, monkeypatch):
    """Issue 14 item 9: `doctor` said "ready" where `run` died with a traceback."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(blocker / "numba"))
    code, out, err = doctor(state_dir=blocker / "state")
    r = rows(out)
    assert code == 1 and r["state directory"] == "fail" and r["numba cache"] == "fail"
    assert str(blocker / "state") in out and "not ready" in out


def test_pairs_that_cannot_carry_an_exchange_stop_are_a_warning(config_file, tmp_path, capsys, monkeypatch):
    import gzip

    from tests.support.emulator import DEFAULT_EXCHANGE_INFO

    monkeypatch.setenv("COLUMNS", "250")
    with gzip.open(DEFAULT_EXCHANGE_INFO, "rt") as fh:
        info = json.load(fh)
    for s in info["symbols"]:
        s["ocoAllowed"] = False
        if s["symbol"] == "BTCUSDT":
            s["orderTypes"] = [t for t in s["orderTypes"] if t != "STOP_LOSS_LIMIT"]
    path = tmp_path / "info.json"
    path.write_text(json.dumps(info))
    with running_emulator(exchange_info=path) as emu:
        cfg = config_file({"exchange": {"api_url": emu.url, "timeout_s": 1}})
        env = tmp_path / "pitrader.env"
        env.write_text("")
        code = main(["--config", str(cfg), "--env-file", str(env), "--state-dir", str(tmp_path / "s"), "doctor"])
    out = capsys.readouterr().out
    assert code == 0 and rows(out)["order types"] == "warn"
    assert "no STOP_LOSS_LIMIT (only pitrader's monitor protects them): BTC/USDT" in " ".join(out.split())
    assert "no OCO (a stop-limit alone)" in out
