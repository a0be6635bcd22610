"""Node updates, the gateway's side: releases queued per node, cut into blocks, resumed, throttled.

A `Rollout` holds one `Delivery` per node being updated. A delivery sends the release's
manifest (the COSE_Sign1) first, then the release body (its parts, concatenated in the
manifest's order) in blocks of RFC 7959 sizes (16 to 1024 bytes; block N starts at byte
N × size), as fast as its token bucket allows (`rate`, bytes a second), so a node's data
frames keep their share of the link. The node says where it stands (`node_at`: the
offset its Receiver wants next, firmware/update.py), which is where sending resumes after
a drop, a node reboot or a gateway restart (the rollout's state file keeps every
delivery's offset). The node's `update` records (`1.3.0:installed`, `…:confirmed`,
`…:refused:<reason>:…`, `…:rolled_back:…`) end a delivery.

Configuration: none yet (block size and rate are arguments).
Usage: rollout.add(node, release_bytes, public_key); per link turn: delivery.next_block(now);
on a node's answer: node_at(offset) or report(text); progress() for status and metrics.
Caveats: not wired to the links yet: nothing sends these blocks to a node; `headrace node
update` does not exist. The release is checked (signature, hashes) before it is queued.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.protocol.coap import block
from gateway.tools import release as releases

STATES = ("sending", "sent", "installed", "confirmed", "failed")


@dataclass
class Delivery:
    """One release on its way to one node. Offsets count bytes of the body; the manifest
    goes first, as block -1 in `next_block`'s answers."""

    node: str
    version: tuple[int, int, int]
    manifest: bytes
    body: bytes
    block_size: int = 512
    rate: float = 2048.0  # bytes a second at most (the link's other traffic keeps the rest)
    clock: Callable[[], float] = time.monotonic
    state: str = "sending"
    error: str = ""
    at: int = 0            # the offset the node asked for last (bytes it holds)
    manifest_taken: bool = False
    sent_bytes: int = 0    # every byte sent, repeats included
    started: float = field(default=0.0)
    _tokens: float = 0.0
    _last: float = 0.0
    _next: int = 0         # the next offset to send (at, or ahead of it while blocks are in flight)
    _manifest_out: bool = False  # the manifest is on its way (sent again after lost())

    def __post_init__(self):
        block(0, False, self.block_size)  # ValueError now for a size RFC 7959 has not
        self.started = self._last = self.clock()
        self._tokens = float(self.block_size)  # one block at once, then at `rate`

    @property
    def size(self) -> int:
        return len(self.body)

    def _take(self, n: int, now: float) -> bool:
        self._tokens = min(self._tokens + (now - self._last) * self.rate, max(float(self.block_size), self.rate))
        self._last = now
        if self._tokens < n:
            return False
        self._tokens -= n
        return True

    def next_block(self, now: float | None = None, window: int = 1):
        """What to send now: ("manifest", sign1 bytes), ("block", offset, bytes, more), or
        None (the bucket is empty, `window` blocks are in flight, or nothing is left)."""
        now = self.clock() if now is None else now
        if self.state != "sending":
            return None
        if not self.manifest_taken:
            if self._manifest_out or not self._take(len(self.manifest), now):
                return None
            self._manifest_out = True
            return ("manifest", self.manifest)
        if self._next >= self.size or self._next - self.at >= window * self.block_size:
            return None
        n = min(self.block_size, self.size - self._next)
        if not self._take(n, now):
            return None
        off = self._next
        self._next += n
        self.sent_bytes += n
        return ("block", off, self.body[off:off + n], off + n < self.size)

    def node_at(self, offset: int) -> None:
        """The node holds `offset` bytes (what its Receiver answered): send from there on,
        aligned down to a block start (RFC 7959 blocks start at N × size)."""
        self.manifest_taken = True
        self.at = max(0, min(offset, self.size))
        self._next = self.at - self.at % self.block_size if self.at < self.size else self.at
        if self.at >= self.size and self.state == "sending":
            self.state = "sent"  # the node finishes and boots into it: reports follow

    def lost(self) -> None:
        """No answer in time (a drop): the manifest or the blocks after `at` go again."""
        self._manifest_out = False
        self._next = self.at - self.at % self.block_size if self.at < self.size else self.at

    def report(self, text: str) -> bool:
        """A node's `update` record about this release; True if it changed the delivery's state."""
        version, _, rest = text.partition(":")
        if version != releases.version_text(self.version):
            return False
        outcome, _, why = rest.partition(":")
        if outcome == "installed" and self.state in ("sending", "sent"):
            self.state = "installed"
        elif outcome == "confirmed":
            self.state = "confirmed"
        elif outcome in ("refused", "rolled_back"):
            self.state, self.error = "failed", rest
        else:
            return False
        return True

    def progress(self, now: float | None = None) -> dict:
        now = self.clock() if now is None else now
        elapsed = max(now - self.started, 1e-9)
        rate = self.at / elapsed
        return {"node": self.node, "version": releases.version_text(self.version), "state": self.state,
                "bytes": self.at, "size": self.size, "percent": round(100.0 * self.at / max(self.size, 1), 1),
                "rate_bps": round(rate, 1), "eta_s": round((self.size - self.at) / rate, 1) if rate > 0 and
                self.state == "sending" else None, "sent_bytes": self.sent_bytes, "error": self.error}


class Rollout:
    """The deliveries of a gateway, one per node, kept in `state_path` (JSON) so a gateway
    restart resumes each one where its node stands."""

    def __init__(self, public_key: bytes, state_path: Path | None = None, block_size: int = 512,
                 rate: float = 2048.0, clock=time.monotonic):
        self.public_key = public_key
        self.state_path = state_path
        self.block_size, self.rate, self.clock = block_size, rate, clock
        self.deliveries: dict[str, Delivery] = {}
        self.release_files: dict[str, str] = {}
        self._restoring = False
        if state_path is not None and state_path.exists():
            self._restore()

    def add(self, node: str, release_file: Path, running: tuple[int, int, int] | None = None) -> Delivery:
        """Queue a release for a node; releases.ReleaseError if it is forged, damaged or not newer."""
        manifest, sign1, parts = releases.read(Path(release_file).read_bytes(), self.public_key, running)
        d = Delivery(node, manifest.version, sign1, b"".join(parts), self.block_size, self.rate, self.clock)
        self.deliveries[node] = d
        self.release_files[node] = str(release_file)
        self.save()
        return d

    def save(self) -> None:
        if self.state_path is None or self._restoring:
            return
        rows = {n: {"release": self.release_files[n], "at": d.at, "state": d.state, "error": d.error,
                    "manifest_taken": d.manifest_taken} for n, d in self.deliveries.items()}
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, sort_keys=True))
        tmp.replace(self.state_path)

    def _restore(self) -> None:
        rows = json.loads(self.state_path.read_text())
        self._restoring = True
        try:
            for node, row in rows.items():
                d = self.add(node, Path(row["release"]))
                d.state, d.error = row["state"], row["error"]
                if row["manifest_taken"]:
                    d.node_at(row["at"])
        finally:
            self._restoring = False

    def progress(self) -> list[dict]:
        return [d.progress() for _, d in sorted(self.deliveries.items())]

    def counts(self) -> dict[str, int]:
        """Deliveries per state (every state named, for the metrics)."""
        out = dict.fromkeys(STATES, 0)
        for d in self.deliveries.values():
            out[d.state] += 1
        return out
