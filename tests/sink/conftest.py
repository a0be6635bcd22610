"""Batches made by the gateway's own encoder, and a source of messages from a list, for the sink's
tests (hil_tests/test_cloud_*.py use them too)."""
from __future__ import annotations

import asyncio
import random

import cbor2
import pytest

from gateway.runtime.uplink import batch, events
from sink.sources import Message

T0 = 1_700_000_000.0


def frame(node: str, seq: int, values: list[float], t0: float = T0) -> bytes:
    """A spooled frame body: a SenML pack as a node sends it (base name, relative times)."""
    pack = [{-2: f"{node}/", -3: t0, 0: "temp", 2: values[0]}]
    pack += [{0: "vib", 2: v, 6: 0.01 * i} for i, v in enumerate(values[1:], 1)]
    return batch.frame_body(node, seq, t0 + 0.5, cbor2.dumps(pack))


def data_batch(gw: str, frames: list[tuple[str, int]], site: str = "s1", windows=(), seed: int = 1) -> bytes:
    rng = random.Random(seed)
    bodies = [frame(node, seq, [round(rng.uniform(0, 100), 2) for _ in range(4)], T0 + seq) for node, seq in frames]
    return batch.encode(gw, site, bodies, list(windows))


def events_batch(gw: str, evs: list[dict], site: str = "s1") -> bytes:
    return events.encode(gw, site, [events.event_body(e) for e in evs])


class ListSource:
    """Messages from a list, acknowledged into `acked` (the sink's loop against a known input)."""

    def __init__(self, messages):
        self.pending = list(messages)
        self.acked: list[str] = []

    async def start(self):
        pass

    async def stop(self):
        pass

    async def fetch(self, n, timeout):
        if not self.pending:
            await asyncio.sleep(min(timeout, 0.05))  # as a broker that has nothing: no busy loop
        out, self.pending = self.pending[:n], self.pending[n:]
        return [Message(t, p, str(i), self._ack(i), self._ack(None)) for i, t, p in out]

    def _ack(self, i):
        async def ack():
            if i is not None:
                self.acked.append(i)
        return ack


@pytest.fixture
def sqlite_store(tmp_path):
    from sink.store import SqliteStore

    store = SqliteStore(str(tmp_path / "cloud.sqlite"))
    yield store
    store.close()
