"""Machine health for an appliance on a shelf: CPU, memory, disk, temperature, Pi power, clock.

Soft limits slow the scan interval; hard limits, an active Pi under-voltage/throttle and an
unsynchronised clock pause new entries (exits keep running, that is the engine's job). A reading
that cannot be taken is ``None`` ("unknown") and never pauses anything: a laptop without
sensors or systemd must not stop trading. Every reader is injectable so tests feed readings.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import psutil

from core.config import HealthConfig

log = logging.getLogger(__name__)

THROTTLED_PATH = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")
THERMAL_PATH = Path("/sys/class/thermal/thermal_zone0/temp")
SYSTEMD_RUN = Path("/run/systemd")
SLOW_FACTOR = 2.0  # scan interval multiplier while a soft limit is hit

# Raspberry Pi firmware get_throttled bits: 0..3 are the state now, 16..19 "has happened since boot".
THROTTLE_BITS = {
    0: "under-voltage",
    1: "arm frequency capped",
    2: "throttled",
    3: "soft temperature limit",
}
PAUSE_BITS = (0, 1, 2)  # power or clock speed is failing us now: no new positions
SLOW_BITS = (3,)


def decode_throttled(value: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(conditions active now, conditions that occurred since boot) from the firmware bit flags."""
    now = tuple(name for bit, name in THROTTLE_BITS.items() if value >> bit & 1)
    past = tuple(name for bit, name in THROTTLE_BITS.items() if value >> (bit + 16) & 1)
    return now, past


# --- readers (each returns None when the value is not available here) --------------------------

_cpu_primed = False


def read_cpu_pct() -> float | None:
    """System-wide CPU % since the previous call (the first call only primes psutil)."""
    global _cpu_primed
    value = psutil.cpu_percent(interval=None)
    if not _cpu_primed:
        _cpu_primed = True
        return None
    return float(value)


def read_mem_available_mb() -> float | None:
    return psutil.virtual_memory().available / 2**20


def read_disk_free_mb(path: Path) -> float | None:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:  # state dir not created yet: its filesystem
        path = path.parent
    return psutil.disk_usage(str(path)).free / 2**20


def read_cpu_temp_c(thermal_path: Path = THERMAL_PATH) -> float | None:
    """psutil's sensors (Pi: ``cpu_thermal``), else the first thermal zone (millidegrees)."""
    sensors: dict[str, Any] = {}
    if hasattr(psutil, "sensors_temperatures"):
        try:
            sensors = psutil.sensors_temperatures() or {}
        except (OSError, RuntimeError):
            sensors = {}
    for name in ("cpu_thermal", "cpu-thermal", "soc_thermal", "coretemp", "k10temp", "zenpower"):
        temps = [t.current for t in sensors.get(name, []) if t.current is not None]
        if temps:
            return float(max(temps))
    try:
        return int(thermal_path.read_text().strip()) / 1000.0
    except (OSError, ValueError):
        pass
    temps = [t.current for entries in sensors.values() for t in entries if t.current]
    return float(max(temps)) if temps else None


def parse_throttled(text: str) -> int:
    """``50005`` (sysfs) or ``throttled=0x50005`` (vcgencmd) -> 0x50005."""
    return int(text.strip().rpartition("=")[2], 16)


def read_throttled(path: Path = THROTTLED_PATH, vcgencmd: str | None = "auto",
                   run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> int | None:
    """Pi firmware throttle flags: sysfs first (works inside the sandbox), then ``vcgencmd``."""
    try:
        return parse_throttled(path.read_text())
    except (OSError, ValueError):
        pass
    exe = shutil.which("vcgencmd") if vcgencmd == "auto" else vcgencmd
    if not exe:
        return None
    try:
        out = run([exe, "get_throttled"], capture_output=True, text=True, timeout=5)
        return parse_throttled(out.stdout) if out.returncode == 0 else None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def read_clock_synced(run_dir: Path = SYSTEMD_RUN, timedatectl: str | None = "auto",
                      run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> bool | None:
    """Whether the system clock is NTP-synchronised; None ("unknown") without systemd.

    systemd-timesyncd touches ``/run/systemd/timesync/synchronized`` on sync; otherwise ask
    timedated (it reads the kernel's sync flag, so chrony/ntpd count too). The kernel flag is not
    read here directly: ``ProtectClock=`` in the unit forbids adjtimex().
    """
    if not (run_dir / "system").is_dir():
        return None  # not booted with systemd (container, dev machine): do not block
    if (run_dir / "timesync" / "synchronized").exists():
        return True
    exe = shutil.which("timedatectl") if timedatectl == "auto" else timedatectl
    if not exe:
        return None
    try:
        out = run([exe, "show", "--property=NTPSynchronized", "--value"], capture_output=True, text=True,
                  timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.stdout.strip() if out.returncode == 0 else ""
    return {"yes": True, "no": False}.get(value)


@dataclass(frozen=True)
class Readers:
    """Where readings come from; tests replace any of them."""

    cpu_pct: Callable[[], float | None] = read_cpu_pct
    mem_available_mb: Callable[[], float | None] = read_mem_available_mb
    disk_free_mb: Callable[[Path], float | None] = read_disk_free_mb
    cpu_temp_c: Callable[[], float | None] = read_cpu_temp_c
    throttled: Callable[[], int | None] = read_throttled
    clock_synced: Callable[[], bool | None] = read_clock_synced


# --- readings and verdict -----------------------------------------------------------------------

@dataclass(frozen=True)
class HealthReading:
    cpu_pct: float | None = None
    mem_available_mb: float | None = None
    disk_free_mb: float | None = None
    cpu_temp_c: float | None = None
    throttled: int | None = None
    clock_synced: bool | None = None
    taken_at: float = 0.0  # wall clock, epoch seconds


def read_health(state_dir: Path, readers: Readers = Readers()) -> HealthReading:
    """Take every reading; a reader that fails counts as unknown (logged at debug level)."""

    def take(name: str, *args: Any) -> Any:
        try:
            return getattr(readers, name)(*args)
        except Exception as exc:  # a sensor must never stop the loop
            log.debug("health reading %s failed: %s", name, exc)
            return None

    return HealthReading(cpu_pct=take("cpu_pct"), mem_available_mb=take("mem_available_mb"),
                         disk_free_mb=take("disk_free_mb", state_dir), cpu_temp_c=take("cpu_temp_c"),
                         throttled=take("throttled"), clock_synced=take("clock_synced"), taken_at=time.time())


@dataclass(frozen=True)
class HealthVerdict:
    """What the engine does about a reading: scan slower and/or stop opening positions."""

    reading: HealthReading
    interval_factor: float = 1.0
    entries_paused: bool = False
    pause_reasons: tuple[str, ...] = ()
    slow_reasons: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.entries_paused and self.interval_factor == 1.0

    def summary(self) -> str:
        """One line for the log and `pitrader status`."""
        r = self.reading
        if self.entries_paused:
            head = f"health: entries PAUSED ({'; '.join(self.pause_reasons)})"
            if self.slow_reasons:
                head += f", interval x{self.interval_factor:g}"
        elif self.slow_reasons:
            head = f"health: interval x{self.interval_factor:g} ({'; '.join(self.slow_reasons)})"
        else:
            head = "health: ok"
        parts = [
            f"cpu {_num(r.cpu_pct, '%', 0)}",
            f"mem {_num(r.mem_available_mb, ' MiB', 0)} available",
            f"disk {_num(r.disk_free_mb, ' MiB', 0)} free",
            f"temp {_num(r.cpu_temp_c, ' C', 1)}",
            "clock " + {True: "synced", False: "NOT synced", None: "unknown"}[r.clock_synced],
        ]
        if r.throttled is not None:
            now, past = decode_throttled(r.throttled)
            parts.append(f"throttled 0x{r.throttled:x}" + (f" (now: {', '.join(now)})" if now else ""))
            if past:
                parts.append(f"since boot: {', '.join(past)}")
        return f"{head} | {' | '.join(parts)}"

    def to_dict(self) -> dict[str, Any]:
        """For `status --json`."""
        r = self.reading
        now, past = decode_throttled(r.throttled) if r.throttled is not None else ((), ())
        return {"cpu_pct": r.cpu_pct, "mem_available_mb": r.mem_available_mb, "disk_free_mb": r.disk_free_mb,
                "cpu_temp_c": r.cpu_temp_c, "clock_synced": r.clock_synced,
                "throttled": None if r.throttled is None else {"raw": f"0x{r.throttled:x}", "now": list(now),
                                                                "since_boot": list(past)},
                "interval_factor": self.interval_factor, "entries_paused": self.entries_paused,
                "pause_reasons": list(self.pause_reasons), "slow_reasons": list(self.slow_reasons)}


def _num(value: float | None, unit: str, digits: int) -> str:
    return "?" if value is None else f"{value:.{digits}f}{unit}"


def assess(reading: HealthReading, cfg: HealthConfig) -> HealthVerdict:
    """Apply the thresholds; pure, so the policy is tested with plain readings."""
    pause: list[str] = []
    slow: list[str] = []
    t = reading.cpu_temp_c
    if t is not None:
        if t >= cfg.temp_hard_c:
            pause.append(f"temperature {t:.1f} C >= {cfg.temp_hard_c:g}")
        if t >= cfg.temp_soft_c:
            slow.append(f"temperature {t:.1f} C >= {cfg.temp_soft_c:g}")
    m = reading.mem_available_mb
    if m is not None:
        if m < cfg.mem_hard_mb:
            pause.append(f"memory available {m:.0f} MiB < {cfg.mem_hard_mb}")
        if m < cfg.mem_soft_mb:
            slow.append(f"memory available {m:.0f} MiB < {cfg.mem_soft_mb}")
    d = reading.disk_free_mb
    if d is not None:
        if d < cfg.disk_hard_mb:
            pause.append(f"disk free {d:.0f} MiB < {cfg.disk_hard_mb}")
        if d < cfg.disk_soft_mb:
            slow.append(f"disk free {d:.0f} MiB < {cfg.disk_soft_mb}")
    if reading.throttled is not None:
        for bit in PAUSE_BITS:
            if reading.throttled >> bit & 1:
                pause.append(f"{THROTTLE_BITS[bit]} now")
                slow.append(f"{THROTTLE_BITS[bit]} now")
        for bit in SLOW_BITS:
            if reading.throttled >> bit & 1:
                slow.append(f"{THROTTLE_BITS[bit]} now")
    if reading.clock_synced is False:
        pause.append("system clock not synchronised")
    return HealthVerdict(reading=reading, interval_factor=SLOW_FACTOR if slow else 1.0,
                         entries_paused=bool(pause), pause_reasons=tuple(pause), slow_reasons=tuple(slow))


class HealthMonitor:
    """Cached readings plus logging for the engine loop.

    ``check()`` re-reads at most every ``refresh_s`` (the clock check may spawn timedatectl),
    logs a warning when entries pause or resume and when the interval slows or recovers, and the
    summary line every ``cfg.interval_s``.
    """

    def __init__(self, cfg: HealthConfig, state_dir: Path, readers: Readers = Readers(),
                 refresh_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg, self.state_dir, self.readers = cfg, Path(state_dir), readers
        self.refresh_s = refresh_s
        self._clock = clock
        self._verdict: HealthVerdict | None = None
        self._read_at = float("-inf")
        self._logged_at = float("-inf")
        if readers.cpu_pct is read_cpu_pct:
            try:
                read_cpu_pct()  # prime psutil so the first real reading means something
            except Exception:  # noqa: BLE001 - a missing /proc/stat only means "unknown"
                pass

    def update_config(self, cfg: HealthConfig) -> None:
        """A reload: new thresholds apply at the next check."""
        self.cfg = cfg
        if self._verdict is not None:
            self._verdict = assess(self._verdict.reading, cfg)

    @property
    def verdict(self) -> HealthVerdict | None:
        """The latest verdict without re-reading (None before the first check)."""
        return self._verdict

    def check(self, force: bool = False) -> HealthVerdict:
        now = self._clock()
        if not force and self._verdict is not None and now - self._read_at < self.refresh_s:
            return self._verdict
        verdict = assess(read_health(self.state_dir, self.readers), self.cfg)
        self._read_at = now
        self._log(self._verdict, verdict, now)
        self._verdict = verdict
        return verdict

    async def check_async(self, force: bool = False) -> HealthVerdict:
        """:meth:`check` off the event loop (the readers do file and subprocess I/O)."""
        import asyncio

        return await asyncio.to_thread(self.check, force)

    def _log(self, old: HealthVerdict | None, new: HealthVerdict, now: float) -> None:
        was_paused = old is not None and old.entries_paused
        was_slow = old is not None and old.interval_factor != 1.0
        is_slow = new.interval_factor != 1.0
        if new.entries_paused and not was_paused:
            log.warning("new entries paused: %s", "; ".join(new.pause_reasons))
        elif was_paused and not new.entries_paused:
            log.warning("new entries resumed: health back within limits")
        if is_slow and not was_slow:
            log.warning("scan interval x%g: %s", new.interval_factor, "; ".join(new.slow_reasons))
        elif was_slow and not is_slow:
            log.info("scan interval back to normal")
        if now - self._logged_at >= self.cfg.interval_s:
            self._logged_at = now
            log.log(logging.INFO if new.ok else logging.WARNING, "%s", new.summary())
