"""core/service/health.py: thresholds from HealthConfig applied to mocked readings; readers on fake files."""
from __future__ import annotations

import logging
import subprocess
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.service import health as h
from core.config import HealthConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
CFG = load_config(ROOT / "config.json").health  # the shipped thresholds
NORMAL = h.HealthReading(cpu_pct=20.0, mem_available_mb=1500.0, disk_free_mb=20_000.0, cpu_temp_c=50.0,
                         throttled=0, clock_synced=True)


def test_shipped_thresholds_are_ordered():
    assert CFG.temp_soft_c < CFG.temp_hard_c
    assert CFG.mem_soft_mb > CFG.mem_hard_mb and CFG.disk_soft_mb > CFG.disk_hard_mb


def test_normal_reading_is_ok():
    v = h.assess(NORMAL, CFG)
    assert v.ok and v.interval_factor == 1.0 and not v.entries_paused
    assert v.summary().startswith("health: ok | cpu 20% | mem 1500 MiB available")
    assert "\n" not in v.summary()


@pytest.mark.parametrize("change,slow,paused,reason", [
    ({"cpu_temp_c": 76.0}, True, False, "temperature 76.0 C >= 75"),
    ({"cpu_temp_c": 83.5}, True, True, "temperature 83.5 C >= 82"),
    ({"mem_available_mb": 150.0}, True, False, "memory available 150 MiB < 200"),
    ({"mem_available_mb": 80.0}, True, True, "memory available 80 MiB < 100"),
    ({"disk_free_mb": 400.0}, True, False, "disk free 400 MiB < 500"),
    ({"disk_free_mb": 50.0}, True, True, "disk free 50 MiB < 100"),
    ({"throttled": 0x1}, True, True, "under-voltage now"),
    ({"throttled": 0x4}, True, True, "throttled now"),
    ({"throttled": 0x2}, True, True, "arm frequency capped now"),
    ({"throttled": 0x8}, True, False, "soft temperature limit now"),
    ({"throttled": 0x50000}, False, False, None),  # happened since boot only: reported, no action
    ({"clock_synced": False}, False, True, "system clock not synchronised"),
    ({"clock_synced": None}, False, False, None),  # unknown (no systemd): never blocks
])
def test_limits(change, slow, paused, reason):
    v = h.assess(replace(NORMAL, **change), CFG)
    assert (v.interval_factor == h.SLOW_FACTOR) is slow
    assert v.interval_factor in (1.0, h.SLOW_FACTOR)
    assert v.entries_paused is paused
    if reason:
        assert reason in v.pause_reasons + v.slow_reasons
        assert reason in v.summary()
    if paused:
        assert "entries PAUSED" in v.summary()


def test_summary_reports_past_throttling_and_unknowns():
    v = h.assess(h.HealthReading(throttled=0x50000), CFG)
    s = v.summary()
    assert v.ok
    assert "throttled 0x50000" in s and "since boot: under-voltage, throttled" in s
    assert "cpu ?" in s and "temp ?" in s and "clock unknown" in s


def test_to_dict_for_status_json():
    d = h.assess(replace(NORMAL, throttled=0x50005, clock_synced=False), CFG).to_dict()
    assert d["throttled"] == {"raw": "0x50005", "now": ["under-voltage", "throttled"],
                              "since_boot": ["under-voltage", "throttled"]}
    assert d["entries_paused"] is True and d["clock_synced"] is False
    assert "system clock not synchronised" in d["pause_reasons"]


@pytest.mark.parametrize("value,now,past", [
    (0x0, (), ()),
    (0x50005, ("under-voltage", "throttled"), ("under-voltage", "throttled")),
    (0x80008, ("soft temperature limit",), ("soft temperature limit",)),
    (0xF000F, tuple(h.THROTTLE_BITS.values()), tuple(h.THROTTLE_BITS.values())),
    (0x20000, (), ("arm frequency capped",)),
])
def test_decode_throttled(value, now, past):
    assert h.decode_throttled(value) == (now, past)


readings = st.builds(
    h.HealthReading,
    cpu_pct=st.none() | st.floats(0, 100),
    mem_available_mb=st.none() | st.floats(0, 8000),
    disk_free_mb=st.none() | st.floats(0, 100_000),
    cpu_temp_c=st.none() | st.floats(20, 110),
    throttled=st.none() | st.integers(0, 0xF000F),
    clock_synced=st.none() | st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(readings, st.sampled_from(["mem_available_mb", "disk_free_mb", "cpu_temp_c", "throttled", "clock_synced"]))
def test_property_unknown_never_pauses_more(reading, name):
    """Losing a sensor can only lift restrictions, never add them."""
    known = h.assess(reading, CFG)
    unknown = h.assess(replace(reading, **{name: None}), CFG)
    assert set(unknown.pause_reasons) <= set(known.pause_reasons)
    assert unknown.interval_factor <= known.interval_factor


@settings(max_examples=300, deadline=None)
@given(readings, st.floats(0, 30), st.floats(0, 500), st.floats(0, 5000))
def test_property_worse_readings_never_resume_entries(reading, hotter, less_mem, less_disk):
    worse = replace(
        reading,
        cpu_temp_c=None if reading.cpu_temp_c is None else reading.cpu_temp_c + hotter,
        mem_available_mb=None if reading.mem_available_mb is None else max(reading.mem_available_mb - less_mem, 0),
        disk_free_mb=None if reading.disk_free_mb is None else max(reading.disk_free_mb - less_disk, 0),
    )
    a, b = h.assess(reading, CFG), h.assess(worse, CFG)
    assert b.entries_paused >= a.entries_paused
    assert b.interval_factor >= a.interval_factor


# --- readers ------------------------------------------------------------------------------------

def fake_run(stdout: str, returncode: int = 0):
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, returncode, stdout=stdout, stderr="")

    run.calls = calls
    return run


def test_parse_throttled_formats():
    assert h.parse_throttled("50005\n") == 0x50005
    assert h.parse_throttled("throttled=0x50005\n") == 0x50005
    assert h.parse_throttled("0\n") == 0


def test_read_throttled_sysfs_then_vcgencmd(tmp_path):
    f = tmp_path / "get_throttled"
    f.write_text("80008\n")
    assert h.read_throttled(f, vcgencmd=None) == 0x80008
    run = fake_run("throttled=0x50000\n")
    assert h.read_throttled(tmp_path / "missing", vcgencmd="/usr/bin/vcgencmd", run=run) == 0x50000
    assert run.calls == [["/usr/bin/vcgencmd", "get_throttled"]]
    assert h.read_throttled(tmp_path / "missing", vcgencmd=None) is None
    assert h.read_throttled(tmp_path / "missing", vcgencmd="/x", run=fake_run("", 1)) is None


def test_read_cpu_temp_prefers_psutil_then_thermal_zone(tmp_path, monkeypatch):
    zone = tmp_path / "temp"
    zone.write_text("61234\n")
    sensor = SimpleNamespace(label="", current=57.5, high=None, critical=None)  # psutil's shwtemp fields
    monkeypatch.setattr(psutil, "sensors_temperatures", lambda: {"cpu_thermal": [sensor]}, raising=False)
    assert h.read_cpu_temp_c(zone) == 57.5
    monkeypatch.setattr(psutil, "sensors_temperatures", lambda: {}, raising=False)
    assert h.read_cpu_temp_c(zone) == pytest.approx(61.234)
    assert h.read_cpu_temp_c(tmp_path / "none") is None


def test_read_clock_synced(tmp_path):
    run_dir = tmp_path / "run-systemd"
    assert h.read_clock_synced(run_dir, timedatectl="/bin/timedatectl", run=fake_run("yes\n")) is None
    (run_dir / "system").mkdir(parents=True)
    assert h.read_clock_synced(run_dir, timedatectl="/bin/timedatectl", run=fake_run("no\n")) is False
    assert h.read_clock_synced(run_dir, timedatectl="/bin/timedatectl", run=fake_run("yes\n")) is True
    assert h.read_clock_synced(run_dir, timedatectl="/bin/timedatectl", run=fake_run("", 1)) is None
    assert h.read_clock_synced(run_dir, timedatectl=None) is None
    (run_dir / "timesync").mkdir()
    (run_dir / "timesync" / "synchronized").touch()
    run = fake_run("no\n")
    assert h.read_clock_synced(run_dir, timedatectl="/bin/timedatectl", run=run) is True
    assert run.calls == []  # the file answers without spawning timedatectl


def test_read_health_real_machine_and_failing_reader(tmp_path):
    def broken():
        raise OSError("sensor gone")

    r = h.read_health(tmp_path / "not-created-yet", h.Readers(cpu_temp_c=broken))
    assert r.cpu_temp_c is None
    assert r.mem_available_mb and r.mem_available_mb > 0
    assert r.disk_free_mb and r.disk_free_mb > 0  # the filesystem the state dir will live on


# --- monitor ------------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_monitor_caches_logs_transitions_and_periodic_summary(caplog):
    state = {"temp": 50.0, "reads": 0}

    def temp():
        state["reads"] += 1
        return state["temp"]

    readers = h.Readers(cpu_pct=lambda: 10.0, mem_available_mb=lambda: 1000.0, disk_free_mb=lambda p: 9000.0,
                        cpu_temp_c=temp, throttled=lambda: 0, clock_synced=lambda: True)
    clock = Clock()
    cfg = HealthConfig(interval_s=300)
    mon = h.HealthMonitor(cfg, Path("/tmp"), readers, refresh_s=30, clock=clock)
    with caplog.at_level(logging.INFO, logger="core.service.health"):
        assert mon.check().ok
        clock.t = 10
        mon.check()
        assert state["reads"] == 1  # cached within refresh_s
        state["temp"] = 90.0
        clock.t = 40
        v = mon.check()
        assert v.entries_paused and v.interval_factor == h.SLOW_FACTOR
        clock.t = 80
        mon.check()
        state["temp"] = 50.0
        clock.t = 120
        assert mon.check().ok
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs[0].startswith("health: ok")  # first check logs the summary
    assert sum("new entries paused: temperature 90.0 C >= 82" in m for m in msgs) == 1  # once, not per check
    assert sum("new entries resumed" in m for m in msgs) == 1
    assert any(m.startswith("scan interval x2") for m in msgs)
    assert any(m == "scan interval back to normal" for m in msgs)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="core.service.health"):
        clock.t = 200
        mon.check()
        assert not caplog.records  # no change, summary not due
        clock.t = 400
        mon.check()
    assert [r.getMessage() for r in caplog.records][0].startswith("health: ok")


def test_monitor_update_config_applies_new_thresholds():
    readers = h.Readers(cpu_pct=lambda: 1.0, mem_available_mb=lambda: 1000.0, disk_free_mb=lambda p: 9000.0,
                        cpu_temp_c=lambda: 70.0, throttled=lambda: None, clock_synced=lambda: None)
    mon = h.HealthMonitor(CFG, Path("/tmp"), readers)
    assert mon.check().ok
    mon.update_config(HealthConfig(temp_soft_c=60.0, temp_hard_c=65.0))
    assert mon.verdict.entries_paused
