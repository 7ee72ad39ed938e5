"""core/log.py: journald lines with priorities, no escapes; secrets never written; the audit log."""
from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import log as plog

SECRET = "hX9vQ2mZr7LkT4pWs1"


@pytest.fixture(autouse=True)
def _clean_logging():
    root = logging.getLogger()
    level = root.level
    yield
    plog.teardown_logging()
    plog.clear_secrets()
    root.setLevel(level)


def journal_env(stream) -> dict[str, str]:
    st_ = os.fstat(stream.fileno())
    return {"JOURNAL_STREAM": f"{st_.st_dev}:{st_.st_ino}"}


def read(stream) -> str:
    stream.flush()
    stream.seek(0)
    return stream.read()


def test_journal_mode_lines_carry_syslog_priority_and_no_escapes(tmp_path):
    with open(tmp_path / "stderr", "w+", encoding="utf-8") as out:
        mode = plog.setup_logging("DEBUG", None, stream=out, environ=journal_env(out))
        assert mode == "journal"
        lg = logging.getLogger("core.engine")
        lg.debug("debug line")
        lg.info("scanned %d pairs", 126)
        lg.warning("spread too wide \x1b[31mRED\x1b[0m on BTC/USDT")
        lg.error("order rejected")
        lg.critical("halting")
        long = "x" * 300
        lg.info(long)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            lg.exception("cycle failed")
        text = read(out)

    lines = text.splitlines()
    assert all(re.match(r"^<[3467]>", line) for line in lines), lines
    assert "\x1b" not in text
    assert "<7>core.engine: debug line" in lines
    assert "<6>core.engine: scanned 126 pairs" in lines
    assert "<4>core.engine: spread too wide RED on BTC/USDT" in lines
    assert "<3>core.engine: order rejected" in lines
    assert "<3>core.engine: halting" in lines
    assert f"<6>core.engine: {long}" in lines  # not wrapped at 80 columns
    # The traceback's lines stay at error priority so `journalctl -p err` shows all of it.
    tb = lines[lines.index("<3>core.engine: cycle failed") + 1:]
    assert tb and all(line.startswith("<3>  ") for line in tb)
    assert any("RuntimeError: boom" in line for line in tb)


def test_inherited_journal_stream_of_another_fd_is_plain(tmp_path):
    """A child whose stderr was redirected still inherits $JOURNAL_STREAM: it must not write <N>."""
    with open(tmp_path / "a", "w+") as journal, open(tmp_path / "b", "w+") as out:
        mode = plog.setup_logging("INFO", None, stream=out, environ=journal_env(journal))
        assert mode == "plain"
        logging.getLogger("x").warning("hello")
        line = read(out).strip()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING x: hello", line), line


@pytest.mark.parametrize("value", ["", "garbage", "1:", ":2"])
def test_malformed_journal_stream_is_ignored(value):
    assert not plog.is_journal_stream(io.StringIO(), {"JOURNAL_STREAM": value})


def test_terminal_mode_uses_rich():
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", closefd=True) as tty:
            assert plog.setup_logging("INFO", None, stream=tty, environ={}) == "terminal"
            from rich.logging import RichHandler

            assert any(isinstance(h, RichHandler) for h in logging.getLogger().handlers)
            logging.getLogger("core.engine").warning("colourful")
            tty.flush()
            data = os.read(master, 65536).decode("utf-8", "replace")
    finally:
        os.close(master)
    assert "colourful" in data


def test_setup_twice_replaces_handlers(tmp_path):
    with open(tmp_path / "err", "w+") as out:
        plog.setup_logging("INFO", None, stream=out, environ={})
        plog.setup_logging("WARNING", None, stream=out, environ={})
        logging.getLogger("x").warning("once")
        logging.getLogger("x").info("filtered by the new level")
        text = read(out)
    assert text.count("once") == 1
    assert "filtered" not in text


def test_unknown_level_rejected():
    with pytest.raises(ValueError):
        plog.setup_logging("LOUD", None, stream=io.StringIO(), environ={})


def test_noisy_libraries_kept_at_warning():
    plog.setup_logging("DEBUG", None, stream=io.StringIO(), environ={})
    assert logging.getLogger("numba").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("core.engine").getEffectiveLevel() == logging.DEBUG


# --- secrets ------------------------------------------------------------------------------------

def test_registered_secret_redacted_in_args_message_and_traceback(tmp_path):
    plog.register_secret(SECRET)
    with open(tmp_path / "err", "w+") as out:
        plog.setup_logging("DEBUG", tmp_path / "logs", stream=out, environ=journal_env(out))
        lg = logging.getLogger("ccxt.base.exchange")
        lg.debug("GET /api/v3/account headers %s", {"X-MBX-APIKEY": SECRET})
        lg.info(f"key is {SECRET}")
        try:
            raise PermissionError(f"invalid key {SECRET}")
        except PermissionError:
            lg.exception("load_markets failed")
        plog.audit("order", note=f"leaked {SECRET}")
        text = read(out)
    audit_text = (tmp_path / "logs" / plog.AUDIT_FILE).read_text()
    assert SECRET not in text and SECRET not in audit_text
    assert "'X-MBX-APIKEY': '***'" in text
    assert "key is ***" in text
    assert "PermissionError: invalid key ***" in text
    assert "leaked ***" in audit_text


def test_short_values_are_not_registered():
    plog.register_secret("1")
    plog.register_secret(None)
    plog.register_secret("")
    assert plog.redact("1 order of 1 BTC") == "1 order of 1 BTC"


alnum = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=8, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=alnum, before=st.text(max_size=30), after=st.text(max_size=30), as_arg=st.booleans())
def test_property_secret_never_reaches_the_stream(secret, before, after, as_arg):
    plog.clear_secrets()
    plog.register_secret(secret)
    out = io.StringIO()
    plog.setup_logging("INFO", None, stream=out, environ={})
    lg = logging.getLogger("prop")
    if as_arg:
        lg.warning("%s%s%s", before, secret, after)
    else:
        lg.warning(before.replace("%", "%%") + secret + after.replace("%", "%%"))
    assert secret not in out.getvalue()
    assert "***" in out.getvalue()


# --- audit log ----------------------------------------------------------------------------------

def test_audit_lines_are_json_with_exact_decimals_and_stay_out_of_the_console(tmp_path):
    out = io.StringIO()
    plog.setup_logging("INFO", tmp_path / "logs", stream=out, environ={})
    plog.audit("fill", symbol="BTC/USDT", side="buy", price=Decimal("30000.10"), amount=Decimal("0.00100000"),
               note="two\nlines")
    plog.audit("order", client_id="pt-1", status="open")
    plog.teardown_logging()
    lines = (tmp_path / "logs" / "audit.log").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    fill = json.loads(lines[0])
    assert fill["event"] == "fill" and fill["price"] == "30000.10" and fill["amount"] == "0.00100000"
    assert fill["note"] == "two\nlines"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fill["ts"])
    assert json.loads(lines[1])["client_id"] == "pt-1"
    assert out.getvalue() == ""


def test_audit_log_rotates_and_keeps_the_configured_backups(tmp_path):
    plog.setup_logging("INFO", tmp_path, audit_max_kb=1, audit_backups=2, stream=io.StringIO(), environ={})
    for i in range(200):
        plog.audit("fill", seq=i, symbol="ETH/USDT", price=Decimal("1234.5"))
    plog.teardown_logging()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.log", "audit.log.1", "audit.log.2"]
    seqs = []
    for name in ("audit.log.2", "audit.log.1", "audit.log"):
        lines = (tmp_path / name).read_text().splitlines()
        assert (tmp_path / name).stat().st_size <= 1024
        seqs += [json.loads(line)["seq"] for line in lines]
    assert seqs == list(range(200 - len(seqs), 200))  # the newest events, in order, none torn


def test_logs_directory_from_systemd_environment(tmp_path):
    plog.setup_logging("INFO", None, stream=io.StringIO(), environ={"LOGS_DIRECTORY": f"{tmp_path}:/elsewhere"})
    assert plog.audit_path() == tmp_path / "audit.log"


def test_without_logs_dir_audit_is_a_no_op(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plog.setup_logging("INFO", None, stream=io.StringIO(), environ={})
    plog.audit("fill", symbol="BTC/USDT")
    assert plog.audit_path() is None
    assert list(tmp_path.iterdir()) == []


def test_unusable_logs_dir_is_reported_not_fatal(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = io.StringIO()
    plog.setup_logging("INFO", blocker / "logs", stream=out, environ={})
    plog.audit("fill", symbol="BTC/USDT")
    assert "audit log disabled" in out.getvalue()
    assert plog.audit_path() is None
