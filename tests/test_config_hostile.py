"""Hostile config.json (issue 15 item 10): each is one line naming the file and the key, exit 78."""
import json

import pytest

from core.cli import main
from core.config import MAX_CONFIG_BYTES, ConfigError, load_config
from core.fields import MAX_ITEMS


def _write(tmp_path, text: str):
    p = tmp_path / "config.json"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, key, expected", [
    ('{"scanner": {"interval_s": %s}}' % ("9" * 5000), "scanner.interval_s", "at most 30 digits"),
    ('{"paper": {"starting_balance": %s}}' % ("9" * 4000), "paper.starting_balance", "at most 30 digits"),
    ('{"paper": {"starting_balance": 1%s.5}}' % ("0" * 4000), "paper.starting_balance", "at most 30 digits"),
    ('{"strategies": {"params": ' + "[" * 50_000 + "]" * 50_000 + "}}", "(file)", "nested at most"),
    ('{"mode": "paper", "risk": {"max_open_positions": 3, "max_open_positions": 5}}', "max_open_positions",
     "given twice"),
    ('{"strategies": {"enabled": []}}', "strategies.enabled", "at least one strategy"),
    (json.dumps({"universe": {"exclude": ["X%d/*" % i for i in range(MAX_ITEMS + 1)]}}), "universe.exclude",
     f"at most {MAX_ITEMS} entries"),
])
def test_hostile_values_are_one_line_with_the_key(tmp_path, capsys, text, key, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == key and expected in err.value.expected
    assert main(["config", "check", "--config", str(path)]) == 78
    out = capsys.readouterr().err.strip()
    assert "\n" not in out and key in out and "Traceback" not in out


def test_oversized_file_is_refused_without_parsing(tmp_path):
    text = json.dumps({"universe": {"exclude": ["X%d/*" % i for i in range(800_000)]}})
    assert len(text) > MAX_CONFIG_BYTES
    with pytest.raises(ConfigError, match="KiB"):
        load_config(_write(tmp_path, text))


def test_a_bom_and_ordinary_numbers_still_load(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"scanner": {"interval_s": 15}, "paper": {
        "starting_balance": 2500.5}}).encode())
    cfg = load_config(path)
    assert cfg.scanner.interval_s == 15 and str(cfg.paper.starting_balance) == "2500.5"
