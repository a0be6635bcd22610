"""The uplinks' session loop: connect, pump until the link fails, back off, again; until cancelled.

Usage:

    await keep_connected(self._connect, self._pump, reconnect_max=30.0,
                         failed=lambda exc, delay: log.warning("…: %s; retrying in %.1f s", exc, delay),
                         teardown=self._teardown)

Back-off: 0.5 s after the first failure, doubling to `reconnect_max`, each wait jittered by
×0.5–1.5 so that a fleet of gateways does not reconnect in step after a broker restart; a
session that connected starts the back-off again from 0.5 s. Network errors (OSError,
ConnectionError, timeouts) and whatever `transient(exc)` accepts are retried; anything else is
a bug and ends the loop with it (the service logs a task that died). `teardown` runs after every
session, failed or cancelled.
"""
from __future__ import annotations

import asyncio
import random
from typing import Awaitable, Callable

FIRST_DELAY = 0.5


async def keep_connected(connect: Callable[[], Awaitable[None]], pump: Callable[[], Awaitable[None]], *,
                         reconnect_max: float, failed: Callable[[BaseException, float], None],
                         transient: Callable[[BaseException], bool] = lambda exc: False,
                         teardown: Callable[[], Awaitable[None]] | None = None) -> None:
    delay = FIRST_DELAY
    while True:
        try:
            await connect()
            delay = FIRST_DELAY
            await pump()
        except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
            failed(exc, delay)
        except Exception as exc:
            if not transient(exc):
                raise
            failed(exc, delay)
        finally:
            if teardown is not None:
                await teardown()
        await asyncio.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, reconnect_max)
