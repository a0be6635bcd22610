"""A node's frame from bytes to readings: the pure-Python reference.

    message → COSE_Mac0 → node by kid → MAC → replay window → SenML into columns

`Verifier(lookup, parser, windows=None)`:

- `lookup(kid: bytes)` gives the registered node of a kid, an object with `name`
  (str) and `key` (bytes), or None (`Registry.by_kid`); it is asked on every frame,
  so a reloaded registry takes effect at once (`verifier.lookup = new.by_kid`).
- `parser` is a `core_ext.ingest.Parser`: an accepted frame's readings are appended
  to its columns (all or nothing, as `Parser.parse`).
- `windows` maps node names to replay window states `(top, bitmap)` to start from.

`check(message, now)` takes one message (bytes) and returns `(node, seq, key,
payload, count)`: the node's name, the frame's sequence number, the node's key,
the SenML payload (bytes) and how many numeric readings went to the parser's
columns, with times relative to `now` (seconds since the epoch) resolved. It
raises, in this order of checks, each with the offending node and value:

- `CoseError`: not a COSE_Mac0 of the kind nodes send (`cose.parse_mac0`);
- `AuthError`: a kid not in the registry, a bad MAC, no sequence number (never
  acked; nothing of the frame is kept);
- `ReplayError`: a sequence number seen already or older than the window (acked as
  a duplicate; carries node, seq, key);
- `PayloadError`: a valid MAC over a payload that is not SenML; the sequence
  number is used up all the same (acked as rejected; carries node, seq, key).

`ack(key, seq, status)` is the gateway's ack to a frame (docs/protocol.md §3): a
COSE_Mac0 with kid "gw" over the CBOR array [1, seq, status], MACed with the node's
key; seq and status are unsigned 64-bit integers (ValueError otherwise).

`state(node)` is a node's window `(top, bitmap)`, None before its first frame;
`restore(windows)` sets every window back to the given states (nodes not named
start afresh). `mac_key(key)` is the key's HMAC state, for the frames' MACs and
the gateway's acks alike (`cose.MacKey` for the first MAC_KEYS keys met, the key
itself past them: memory stays bounded however many nodes there are).
`hmac_sha256(key, data)` is HMAC-SHA256 (32 bytes), what every tag is cut from;
`sha256_code(use=None)` says which code hashes its blocks ("hashlib" here; the
compiled module's "sha-ni" or "portable", and `use` "portable" or "best" switches).

The compiled module (`_verify.pyx`) reads the nodes' layout of COSE_Mac0 from
offsets into the message, makes the HMAC-SHA256 in its own C (from the key's
midstates, with the processor's SHA extensions where it has them), writes the
ack in one buffer, keeps the windows as C integers and hands the payload to the
parser; other
layouts go through `cose.parse_mac0` as here. Each check, its result and its
error (type, message, node, seq, key) are the same, and so is each ack.
"""
from __future__ import annotations

import hmac

import cbor2

from gateway.errors import AuthError, PayloadError, ReplayError
from gateway.protocol import cose
from gateway.protocol.numbers import GATEWAY_KID, MSG_ACK, REPLAY_WINDOW

from core_ext._ingest_py import IngestError

MAC_KEYS = 128  # keys whose MacKey is kept (about 600 bytes each; the compiled core keeps 64 bytes a key)
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


class Verifier:
    def __init__(self, lookup, parser, windows: dict[str, tuple[int, int]] | None = None):
        self.lookup, self.parser = lookup, parser
        self._windows: dict[str, ReplayWindow] = {}
        self._mac_keys: dict[bytes, cose.MacKey] = {}
        self.restore(windows or {})

    def mac_key(self, key: bytes) -> cose.MacKey | bytes:
        mk = self._mac_keys.get(key)
        if mk is None:
            if len(self._mac_keys) >= MAC_KEYS:
                return key  # the plain key: a one-shot HMAC, as fast as making a MacKey for one use
            mk = self._mac_keys[key] = cose.MacKey(key)
        return mk

    def ack(self, key: bytes, seq: int, status: int) -> bytes:
        if not (0 <= seq < 2 ** 64 and 0 <= status < 2 ** 64):
            raise ValueError(f"ack for seq {seq}, status {status}: each must be an unsigned 64-bit integer")
        return cose.mac0(self.mac_key(key), GATEWAY_KID, cbor2.dumps([MSG_ACK, seq, status]))

    def state(self, node: str) -> tuple[int, int] | None:
        window = self._windows.get(node)
        return None if window is None else window.state()

    def restore(self, windows: dict[str, tuple[int, int]]) -> None:
        self._windows = {name: ReplayWindow(*s) for name, s in windows.items()}

    def check(self, message: bytes, now: float) -> tuple[str, int, bytes, bytes, int]:
        mac0 = cose.parse_mac0(message)
        node = self.lookup(mac0.kid)
        if node is None:
            raise AuthError(f"unknown node kid {mac0.kid!r}: not in the registry",
                            node=mac0.kid.decode("utf-8", "replace"))
        payload = mac0.verify(self.mac_key(node.key))
        name, seq = node.name, mac0.seq
        if seq is None:
            raise AuthError(f"node {name}: frame without a sequence number (partial IV)", node=name)
        window = self._windows.get(name)
        if window is None:
            window = self._windows[name] = ReplayWindow()
        if window.seen(seq):
            raise ReplayError(f"node {name}: sequence number {seq} already seen (window top {window.top})",
                              node=name, seq=seq, key=node.key)
        window.mark(seq)  # a valid MAC: the number is used up, whatever the payload holds
        try:
            count = self.parser.parse(payload, now)
        except IngestError as exc:
            raise PayloadError(f"node {name} seq {seq}: invalid SenML {exc}", node=name, seq=seq,
                               key=node.key) from None
        return name, seq, node.key, payload, count


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 of data (32 bytes): hashlib's, through `hmac`."""
    return hmac.digest(bytes(key), bytes(data), "sha256")


def sha256_code(use: str | None = None) -> str:
    """Which code hashes the SHA-256 blocks: hashlib's, whatever `use` asks ("portable" or "best")."""
    if use is not None and use not in ("portable", "best"):
        raise ValueError(f"sha256_code(use={use!r}): 'portable' or 'best'")
    return "hashlib"
