"""Logging set-up and a rate limit for log lines a noisy line or an attacker could flood."""
from __future__ import annotations

import logging
import sys
import time


def setup(level: str = "info", stream=None) -> None:
    """One line per event: time, level, component, message. systemd adds its own time, that's fine."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("headrace")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class RateLimited:
    """Log at most `burst` lines per `period` seconds per key; then one summary of what was held back."""

    def __init__(self, log: logging.Logger, burst: int = 10, period: float = 10.0):
        self.log, self.burst, self.period = log, burst, period
        self._state: dict[str, list] = {}  # key -> [window start, lines, suppressed]

    def warning(self, key: str, msg: str, *args) -> None:
        now = time.monotonic()
        st = self._state.get(key)
        if st is None or now - st[0] >= self.period:
            if st and st[2]:
                self.log.warning("%d more '%s' lines suppressed in the last %.0f s", st[2], key, self.period)
            st = self._state[key] = [now, 0, 0]
        if st[1] < self.burst:
            st[1] += 1
            self.log.warning(msg, *args)
        else:
            st[2] += 1
