"""core.notify.service pieces that need no network: log alerts."""
from __future__ import annotations

import logging

from core.notify.service import LogAlerts


def test_a_malformed_log_call_does_not_raise_into_the_caller():
    """An ERROR logged with wrong arguments (in an order path, say) must not become an exception there."""
    alerts = LogAlerts()
    logger = logging.getLogger("core.trading.test_alerts")
    logger.addHandler(alerts)
    logger.propagate = False
    raise_exc, logging.raiseExceptions = logging.raiseExceptions, False
    try:
        logger.error("fill %s of %s", "only one argument")
        logger.error("order %s refused", "X")
    finally:
        logging.raiseExceptions = raise_exc
        logger.removeHandler(alerts)
        logger.propagate = True
    assert [p[3] for p in alerts.pending] == ["order X refused"]
