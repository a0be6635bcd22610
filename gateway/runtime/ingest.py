"""Ingest: verify a node's message, check its sequence number, parse its readings.

    message bytes → COSE_Mac0 structure → key by kid → MAC → replay window → SenML

Each step raises a typed `RejectedFrame`; the caller counts it by `reason`. The
SenML payload goes through `core_ext.ingest`, which appends its numeric readings
to columns (no Python object per reading); the pipeline takes the columns after
the spool commit.
"""
from __future__ import annotations

from dataclasses import dataclass

import time

import cbor2

from core_ext.ingest import IngestError, Parser

from gateway.errors import AuthError, PayloadError, ReplayError
from gateway.protocol import cose
from gateway.protocol.numbers import ACK_DUPLICATE, ACK_REJECTED, ACK_STORED, GATEWAY_KID, MSG_ACK, REPLAY_WINDOW
from gateway.runtime.registry import Registry

_MASK = (1 << REPLAY_WINDOW) - 1


class ReplayWindow:
    """Sliding window of the last 64 sequence numbers of one node (RFC 9147 §4.5.1).

    `top` is the highest accepted number (-1 before any); bit i of `bitmap` is
    set when `top - i` was accepted.
    """

    __slots__ = ("top", "bitmap")

    def __init__(self, top: int = -1, bitmap: int = 0):
        self.top, self.bitmap = top, bitmap

    def seen(self, seq: int) -> bool:
        """True if `seq` was accepted already or is too old to tell."""
        if seq > self.top:
            return False
        offset = self.top - seq
        return offset >= REPLAY_WINDOW or bool(self.bitmap >> offset & 1)

    def mark(self, seq: int) -> None:
        if seq > self.top:
            shift = seq - self.top
            self.bitmap = ((self.bitmap << shift) | 1) & _MASK if shift < REPLAY_WINDOW else 1
            self.top = seq
        else:
            self.bitmap |= 1 << (self.top - seq)

    def state(self) -> tuple[int, int]:
        return self.top, self.bitmap


@dataclass(slots=True)
class Accepted:
    """A verified frame with a fresh sequence number; `count` numeric readings went to the columns."""

    node: str
    seq: int
    key: bytes
    payload: bytes
    received: float
    count: int


_MAC_KEYS = 128  # nodes whose MacKey is kept (about 600 bytes each)


class Ingest:
    """Stateless checks plus the per-node replay windows (restored from the spool)."""

    def __init__(self, registry: Registry, windows: dict[str, tuple[int, int]] | None = None,
                 max_series: int = 100_000):
        self.registry = registry
        self.parser = Parser(max_series=max_series)
        self._committed: dict[str, tuple[int, int]] = dict(windows or {})
        self.windows: dict[str, ReplayWindow] = {n: ReplayWindow(*s) for n, s in self._committed.items()}
        self._mac_keys: dict[bytes, cose.MacKey] = {}

    def mac_key(self, key: bytes) -> cose.MacKey | bytes:
        """The MacKey of a node's key, for its frames' MACs and its acks'; kept for the first
        _MAC_KEYS keys seen, the key itself for the others (a bound on memory, not a cache
        that churns when many nodes take turns)."""
        mk = self._mac_keys.get(key)
        if mk is None:
            if len(self._mac_keys) >= _MAC_KEYS:
                return key  # the plain key: a one-shot HMAC, as fast as making a MacKey for one use
            mk = self._mac_keys[key] = cose.MacKey(key)
        return mk

    def committed(self, windows: dict[str, tuple[int, int]]) -> None:
        """Record window states the spool has just made durable."""
        self._committed.update(windows)

    def rollback(self) -> None:
        """Forget every uncommitted mark: back to the windows the spool holds."""
        self.windows = {n: ReplayWindow(*s) for n, s in self._committed.items()}

    def check(self, message: bytes) -> Accepted:
        """Verify and decode. Raises CoseError, AuthError (never ack), ReplayError (ack
        as duplicate), PayloadError (ack as rejected); the last two carry node, seq, key."""
        mac0 = cose.parse_mac0(message)
        node = self.registry.by_kid(mac0.kid)
        if node is None:
            raise AuthError(f"unknown node kid {mac0.kid!r}: not in the registry", node=mac0.kid.decode("utf-8", "replace"))
        payload = mac0.verify(self.mac_key(node.key))
        if mac0.seq is None:
            raise AuthError(f"node {node.name}: frame without a sequence number (partial IV)", node=node.name)
        window = self.windows.get(node.name)
        if window is None:
            window = self.windows[node.name] = ReplayWindow()
        if window.seen(mac0.seq):
            raise ReplayError(f"node {node.name}: sequence number {mac0.seq} already seen (window top {window.top})",
                              node=node.name, seq=mac0.seq, key=node.key)
        received = time.time()
        window.mark(mac0.seq)  # a valid MAC: the number is used up, whatever the payload holds
        try:
            count = self.parser.parse(payload, received)
        except IngestError as exc:
            raise PayloadError(f"node {node.name} seq {mac0.seq}: invalid SenML {exc}", node=node.name,
                               seq=mac0.seq, key=node.key) from None
        return Accepted(node.name, mac0.seq, node.key, payload, received, count)

    def dirty_state(self, nodes) -> dict[str, tuple[int, int]]:
        return {n: self.windows[n].state() for n in nodes if n in self.windows}


def ack_message(key: bytes | cose.MacKey, seq: int, status: int, commands=()) -> bytes:
    """The gateway's ack (docs/protocol.md §3): COSE_Mac0 kid 'gw', payload [1, seq, status],
    with [[id, cmd, args], ...] appended when it carries commands for the node."""
    body = [MSG_ACK, seq, status]
    if commands:
        body.append([[c.id, c.cmd, c.args] for c in commands])
    return cose.mac0(key, GATEWAY_KID, cbor2.dumps(body))


_CMD_RECORD = b"\x63cmd"  # the CBOR text "cmd": a frame that may report commands
_UPDATE_RECORD = b"\x66update"  # the CBOR text "update": a frame that may report on a node update


def command_reports(node: str, payload: bytes) -> list[str]:
    """The `<id>:ok|error:<why>` texts of a frame's `cmd` records (SenML name `cmd` or
    `<node>/cmd`), cheap when there are none; none from a payload that is not SenML."""
    return _texts(node, payload, "cmd", _CMD_RECORD)


def update_reports(node: str, payload: bytes) -> list[str]:
    """The texts of a frame's `update` records (`1.3.0:installed`, …: firmware/update.py)."""
    return _texts(node, payload, "update", _UPDATE_RECORD)


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
