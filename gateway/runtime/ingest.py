"""Ingest: verify a node's message, check its sequence number, parse its readings.

    message bytes → COSE_Mac0 structure → key by kid → MAC → replay window → SenML

All of it per frame in one call of the compiled core (`core_ext.verify`, whose
pure-Python reference says what each step checks). Each step raises a typed
`RejectedFrame`; the caller counts it by `reason`. The SenML payload's numeric
readings go to `core_ext.ingest`'s columns (no Python object per reading); the
pipeline takes the columns after the spool commit.
"""
from __future__ import annotations

from dataclasses import dataclass

import time

import cbor2

from core_ext.ingest import IngestError, Parser
from core_ext.verify import ReplayWindow, Verifier

from gateway.protocol import cose
from gateway.protocol.numbers import ACK_DUPLICATE, ACK_REJECTED, ACK_STORED, GATEWAY_KID, MSG_ACK
from gateway.runtime.registry import Registry

__all__ = ["CMD_RECORD", "UPDATE_RECORD", "Accepted", "Ingest", "ReplayWindow", "ack_message", "command_reports",
           "update_reports"]


@dataclass(slots=True)
class Accepted:
    """A verified frame with a fresh sequence number; `count` numeric readings went to the columns."""

    node: str
    seq: int
    key: bytes
    payload: bytes
    received: float
    count: int


class Ingest:
    """Stateless checks plus the per-node replay windows (restored from the spool)."""

    def __init__(self, registry: Registry, windows: dict[str, tuple[int, int]] | None = None,
                 max_series: int = 100_000):
        self.parser = Parser(max_series=max_series)
        self._committed: dict[str, tuple[int, int]] = dict(windows or {})
        self._registry = registry
        self._verifier = Verifier(registry.by_kid, self.parser, self._committed)
        # check() without its Accepted: (node, seq, key, payload, count) of a message received at
        # `now` (seconds since the epoch), the same errors; the pipeline's call a frame
        self.verify = self._verifier.check

    @property
    def registry(self) -> Registry:
        return self._registry

    @registry.setter
    def registry(self, registry: Registry) -> None:
        """A reloaded registry (SIGHUP): its nodes and keys count from the next frame on."""
        self._registry = registry
        self._verifier.lookup = registry.by_kid

    def mac_key(self, key: bytes) -> cose.MacKey | bytes:
        """The MacKey of a node's key, for its frames' MACs and its acks'; kept for the first
        MAC_KEYS keys seen, the key itself for the others (a bound on memory, not a cache
        that churns when many nodes take turns)."""
        return self._verifier.mac_key(key)

    def ack(self, key: bytes, seq: int, status: int, commands=()) -> bytes:
        """The ack to a node's frame (`ack_message`); the compiled core writes it when it
        carries no commands (every ack but a few)."""
        if commands:
            return ack_message(self.mac_key(key), seq, status, commands)
        return self._verifier.ack(key, seq, status)

    def committed(self, windows: dict[str, tuple[int, int]]) -> None:
        """Record window states the spool has just made durable."""
        self._committed.update(windows)

    def rollback(self) -> None:
        """Forget every uncommitted mark: back to the windows the spool holds."""
        self._verifier.restore(self._committed)

    def check(self, message: bytes) -> Accepted:
        """Verify and decode. Raises CoseError, AuthError (never ack), ReplayError (ack
        as duplicate), PayloadError (ack as rejected); the last two carry node, seq, key."""
        now = time.time()
        node, seq, key, payload, count = self._verifier.check(message, now)
        return Accepted(node, seq, key, payload, now, count)

    def dirty_state(self, nodes) -> dict[str, tuple[int, int]]:
        state = self._verifier.state
        return {n: s for n in nodes if (s := state(n)) is not None}


def ack_message(key: bytes | cose.MacKey, seq: int, status: int, commands=()) -> bytes:
    """The gateway's ack (docs/protocol.md §3): COSE_Mac0 kid 'gw', payload [1, seq, status],
    with [[id, cmd, args], ...] appended when it carries commands for the node."""
    body = [MSG_ACK, seq, status]
    if commands:
        body.append([[c.id, c.cmd, c.args] for c in commands])
    return cose.mac0(key, GATEWAY_KID, cbor2.dumps(body))


CMD_RECORD = b"\x63cmd"  # the CBOR text "cmd": a frame that may report commands
UPDATE_RECORD = b"\x66update"  # the CBOR text "update": a frame that may report on a node update


def command_reports(node: str, payload: bytes) -> list[str]:
    """The `<id>:ok|error:<why>` texts of a frame's `cmd` records (SenML name `cmd` or
    `<node>/cmd`), cheap when there are none; none from a payload that is not SenML."""
    return _texts(node, payload, "cmd", CMD_RECORD)


def update_reports(node: str, payload: bytes) -> list[str]:
    """The texts of a frame's `update` records (`1.3.0:installed`, …: firmware/update.py)."""
    return _texts(node, payload, "update", UPDATE_RECORD)


def _texts(node: str, payload: bytes, name: str, marker: bytes) -> list[str]:
    if marker not in payload:
        return []
    from gateway.runtime.uplink.batch import frame_readings  # the SenML names resolved as everywhere else
    try:
        readings = frame_readings(node, 0.0, payload)
    except IngestError:
        return []
    return [v for sensor, _t, v in readings if sensor == name and isinstance(v, str)]


ACK_FOR = {"stored": ACK_STORED, "duplicate": ACK_DUPLICATE, "rejected": ACK_REJECTED}
