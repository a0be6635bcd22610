"""The uplinks' batch encoder: spool rows to one message's payload, off the event loop when large.

Both pumps (MQTT, JetStream) turn rows read from the spool into a batch (`batch.encode`) or
an events message (`events.encode`). Events and small batches are encoded on the event loop
(microseconds); a data batch of INLINE_FRAMES frames or more goes to a thread of its own,
so the loop goes on reading, checking and acking frames meanwhile. The thread exists only
while its owner runs (`running()`): it starts with the first large batch and, on exit,
finishes the batch it is encoding (milliseconds) and stops.
"""
from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor

from gateway.runtime.spool import KIND_FRAME, KIND_WINDOW, PRIO_EVENT
from gateway.runtime.uplink import batch, events


class BatchEncoder:
    # Data batches with fewer frames are encoded on the loop: under about half a millisecond of
    # work (windows are spliced, not encoded), a thread hop is not worth it, and a gateway at low
    # load runs no encoder thread at all
    INLINE_FRAMES = 64
    THREAD_NAME = "uplink-encode"

    def __init__(self, gateway: str, site: str, schema: batch.Schema | None):
        self.gateway, self.site, self.schema = gateway, site, schema
        self._pool: ThreadPoolExecutor | None = None
        self._on = False

    @contextlib.contextmanager
    def running(self):
        """Large batches may go to the encoder thread for the time of this block."""
        self._on = True
        try:
            yield
        finally:
            self._on = False
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    async def encode(self, prio: int, rows) -> bytes:
        """The payload of one message from spool rows [(id, kind, body)] of one priority."""
        if prio == PRIO_EVENT:
            return events.encode(self.gateway, self.site, [body for _id, _k, body in rows])
        frames = [body for _id, kind, body in rows if kind == KIND_FRAME]
        windows = [body for _id, kind, body in rows if kind == KIND_WINDOW]
        if not self._on or len(frames) < self.INLINE_FRAMES:
            return batch.encode(self.gateway, self.site, frames, windows, self.schema)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.THREAD_NAME)
        # the schema is touched by one encode at a time: the pump awaits each
        return await asyncio.get_running_loop().run_in_executor(self._pool, batch.encode, self.gateway, self.site,
                                                                frames, windows, self.schema)
