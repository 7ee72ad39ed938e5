"""The service's daily online backup of its state database, and an hourly check of the file.

The backup is taken in a worker thread after a cycle when the newest one is older than
``store.backup_every_h`` (so also right after the first start); a failure for want of space is
one WARNING and another try an hour later, never an interruption of the loop. Damage is another
matter: the hourly ``quick_check`` (a fresh connection reads the file itself, not the service's
page cache) or a copy that fails its integrity check stops the service with
``StateDatabaseError`` (exit 74), before the damage reaches every backup.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from core.config import Config
from core.store.errors import StateDatabaseError, storage_fault
from core.store.snapshot import due, make_backup, quick_check

log = logging.getLogger(__name__)

RETRY_S = 3600.0
CHECK_EVERY_S = 3600.0
ADVICE = "stop pitrader and restore a backup (pitrader backup list / restore; live: then pitrader backup rebuild)"


class BackupSchedule:
    def __init__(self, db: Path) -> None:
        self.db = Path(db)
        self._next_try = 0.0
        self._failing = False
        self._next_check = 0.0

    async def check(self, now: float | None = None) -> None:
        """Hourly: raise ``StateDatabaseError`` if the file on disk is damaged."""
        now = time.time() if now is None else now
        if now < self._next_check or not self.db.exists():
            return
        self._next_check = now + CHECK_EVERY_S
        problem = await asyncio.to_thread(quick_check, self.db)
        if problem is not None:
            raise StateDatabaseError(self.db, f"damaged on disk while running ({problem})", ADVICE)

    async def maybe_backup(self, cfg: Config, now: float | None = None) -> Path | None:
        now = time.time() if now is None else now
        if now < self._next_try or not due(self.db, cfg.store.backup_every_h * 3600, now):
            return None
        try:
            path = await asyncio.to_thread(make_backup, self.db, cfg.store.backups_keep, "daily", now)
        except StateDatabaseError as exc:  # the copy fails its integrity check: so does the source
            raise StateDatabaseError(self.db, f"damaged on disk while running (its backup copy: {exc.problem})",
                                     ADVICE) from exc
        except Exception as exc:  # noqa: BLE001 - want of space must never stop the loop
            if storage_fault(exc) == "corrupt":
                raise StateDatabaseError(self.db, f"damaged on disk while running ({exc})", ADVICE) from exc
            self._next_try = now + RETRY_S
            if not self._failing:
                log.warning("backup of %s failed (%s); trying again in an hour", self.db, exc)
            self._failing = True
            return None
        if self._failing:
            log.info("backup of %s works again", self.db)
        self._failing = False
        log.info("state database backed up to %s", path)
        return path
