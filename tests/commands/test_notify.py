"""`pitrader notify test`, `config check` of the notify section, and secrets kept out of output."""
from __future__ import annotations

import json

import pytest

from core.cli import main
from tests.support.http_fakes import FakeTelegram, WebhookReceiver

TOKEN = "123456:TEST-token-abcdefghijklmnop"


@pytest.fixture
def fakes():
    with FakeTelegram(TOKEN) as tg, WebhookReceiver() as hook:
        yield tg, hook


def _env(tmp_path, token=TOKEN, hook_url=None):
    env = tmp_path / "pitrader.env"
    env.write_text(f"TELEGRAM_BOT_TOKEN={token}\n" + (f"NOTIFY_WEBHOOK_URL={hook_url}\n" if hook_url else ""))
    return env


def test_notify_test_reports_every_channel(tmp_path, config_file, fakes, capsys):
    tg, hook = fakes
    cfg = config_file({"notify": {"telegram": {"enabled": True, "chat_ids": ["42", "43"], "api_url": tg.url},
                                  "webhook": {"enabled": True, "format": "discord"}}})
    env = _env(tmp_path, hook_url=hook.url + "/api/webhooks/1/SECRETPART")
    code = main(["--config", str(cfg), "--env-file", str(env), "notify", "test", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    rows = json.loads(out)["channels"]
    assert [(r["channel"], r["ok"]) for r in rows] == [("telegram:42", True), ("telegram:43", True), ("webhook", True)]
    assert len(tg.texts("42")) == 1 and "test message" in tg.texts("43")[0]
    assert "test message" in hook.bodies()[0]["content"]
    assert TOKEN not in out and "SECRETPART" not in out


def test_notify_test_fails_per_channel_without_leaking_the_token(tmp_path, config_file, fakes, capsys):
    tg, hook = fakes
    hook.down = True
    bad = "999999:WRONG-token-abcdefghijklmnop"
    cfg = config_file({"notify": {"telegram": {"enabled": True, "chat_ids": ["42"], "api_url": tg.url},
                                  "webhook": {"enabled": True}}})
    env = _env(tmp_path, token=bad, hook_url=hook.url + "/hook?token=SECRETPART")
    code = main(["--config", str(cfg), "--env-file", str(env), "notify", "test"])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code == 1
    assert "failed telegram:42: HTTP 401" in text and "check TELEGRAM_BOT_TOKEN" in text
    assert "failed webhook: HTTP 502" in text
    assert "WRONG" not in text and "SECRETPART" not in text


def test_no_channel_enabled_is_said(tmp_path, config_file, capsys):
    assert main(["--config", str(config_file()), "--env-file", str(_env(tmp_path)), "notify", "test"]) == 1
    assert "no notification channel is enabled" in capsys.readouterr().out


@pytest.mark.parametrize("overrides, env_token, key", [
    ({"telegram": {"enabled": True, "chat_ids": []}}, TOKEN, "notify.telegram.chat_ids"),
    ({"telegram": {"chat_ids": ["@me"]}}, TOKEN, "notify.telegram.chat_ids[0]"),
    ({"telegram": {"enabled": True, "chat_ids": ["42"]}}, None, "TELEGRAM_BOT_TOKEN"),
    ({"webhook": {"enabled": True}}, TOKEN, "NOTIFY_WEBHOOK_URL"),
    ({"webhook": {"format": "slack"}}, TOKEN, "notify.webhook.format"),
    ({"telegram": {"events": ["fills"]}}, TOKEN, "notify.telegram.events[0]"),
])
def test_config_check_names_the_bad_notify_key(tmp_path, config_file, capsys, overrides, env_token, key):
    env = tmp_path / "pitrader.env"
    env.write_text(f"TELEGRAM_BOT_TOKEN={env_token}\n" if env_token else "")
    code = main(["--config", str(config_file({"notify": overrides})), "--env-file", str(env), "config", "check"])
    err = capsys.readouterr().err
    assert code == 78
    assert f": {key}:" in err and TOKEN not in err


def test_a_malformed_token_is_refused_without_echoing_it(tmp_path, config_file, capsys):
    env = tmp_path / "pitrader.env"
    env.write_text("TELEGRAM_BOT_TOKEN=not a token at all SECRETPART\n")
    assert main(["--config", str(config_file()), "--env-file", str(env), "config", "check"]) == 78
    err = capsys.readouterr().err
    assert "TELEGRAM_BOT_TOKEN" in err and "SECRETPART" not in err


def test_doctor_checks_the_channels_without_sending(tmp_path, config_file, fakes, capsys, monkeypatch):
    tg, hook = fakes
    from core.commands import doctor

    async def no_exchange(cfg, secrets, gateway=None, clock=None):
        return []

    monkeypatch.setattr(doctor, "diagnose", no_exchange)  # the exchange checks have their own tests
    cfg = config_file({"notify": {"telegram": {"enabled": True, "chat_ids": ["42"], "api_url": tg.url},
                                  "webhook": {"enabled": True}}})
    env = _env(tmp_path, hook_url=hook.url + "/hook")
    code = main(["--config", str(cfg), "--env-file", str(env), "--state-dir", str(tmp_path / "s"), "doctor", "--json"])
    rows = {c["check"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert code == 0
    assert rows["notify telegram:42"]["verdict"] == "ok" and "getMe" in rows["notify telegram:42"]["detail"]
    assert rows["notify webhook"]["verdict"] == "ok"
    assert tg.sent == [] and hook.received == []  # nothing sent to anyone
