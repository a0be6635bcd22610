"""Node updates, the gateway's side: releases queued per node, served in blocks, resumed, throttled.

A `Rollout` holds one `Delivery` per node being updated. The gateway offers the release
to the node (the command `update`, riding an ack: `offer()`), and the node fetches it
block by block with RFC 7959 Block2 requests, `GET /u/<rid>/m` for the manifest (the
COSE_Sign1) and `GET /u/<rid>/b` for the body (the parts concatenated in the manifest's
order), one block in flight (docs/protocol.md §9; firmware/fetch.py). `rid` is the
release's id: the first 8 bytes of the manifest's SHA-256, in hex. The node asks for
the block that holds the first byte it lacks (update.Receiver reads where it stands
from its flash), so a drop, a node reboot or a gateway restart resumes there; a
delivery whose node has asked nothing for `stall` seconds is offered again. Each answer
is held back by a token bucket (`rate`, bytes a second) so a node's data frames keep
their share of the link. The node's `update` records (`1.3.0:received`,
`…:installed`, `…:confirmed`, `…:refused:<reason>:…`, `…:rolled_back:…`) move a
delivery on.

Configuration: `[update]` (block_size, rate, stall; gateway/config/sections.py).
Usage: rollout.add(node, release_file); per block request: rollout.serve(node, rid,
part, num, size) -> (delay, bytes, more) or None; node reports: report(node, text);
offers due: due_offers(); progress() for status, metrics and the page.
Caveats: a node's block requests are not authenticated (the release is no secret, and
what the node writes is checked against the signed manifest): a forged request can
move the progress figures, never a delivery's state, which only the node's
authenticated frames change. The release is checked (signature, hashes) before it is
queued.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.protocol.coap import block
from gateway.runtime.files import write_atomic
from gateway.tools import release as releases

log = logging.getLogger("headrace.update")
STATES = ("sending", "sent", "installed", "confirmed", "failed")
ENDED = ("confirmed", "failed")


def release_id(sign1: bytes) -> str:
    """A release's id: the first 8 bytes of its manifest's SHA-256, as 16 hex digits."""
    return hashlib.sha256(sign1).digest()[:8].hex()


@dataclass
class Delivery:
    """One release on its way to one node. Offsets count bytes of the body."""

    node: str
    version: tuple[int, int, int]
    manifest: bytes
    body: bytes
    block_size: int = 512
    rate: float = 4096.0  # bytes a second at most (the link's other traffic keeps the rest)
    clock: Callable[[], float] = time.time  # wall clock: a delivery's times outlive a gateway restart
    state: str = "sending"
    error: str = ""
    at: int = 0            # the body offset the node asked for last (bytes it holds, to a block)
    sent_bytes: int = 0    # every byte served, manifest and repeats included
    blocks: int = 0        # block requests answered
    offers: int = 0        # times offered (the command `update`)
    started: float = field(default=0.0)
    active: float = field(default=0.0)  # the last offer or request (clock)
    finished: float = 0.0  # when the node had every byte (clock), 0 before
    rid: str = ""
    cloud_id: str = ""     # the id of the cloud's `update` command, until its outcome is answered
    _tokens: float = 0.0
    _last: float = 0.0

    def __post_init__(self):
        block(0, False, self.block_size)  # ValueError now for a size RFC 7959 has not
        self.rid = release_id(self.manifest)
        self.started = self._last = self.clock()
        self._tokens = float(self.block_size)  # one block at once, then at `rate`

    @property
    def size(self) -> int:
        return len(self.body)

    def offer_args(self) -> dict:
        """The `update` command's arguments (docs/protocol.md §9)."""
        return {"rid": self.rid, "v": releases.version_text(self.version), "size": self.size,
                "block": self.block_size, "rate": int(self.rate)}

    def offered(self, now: float | None = None) -> None:
        self.offers += 1
        self.active = self.clock() if now is None else now

    def serve(self, part: str, num: int, size: int, now: float | None = None):
        """The answer to a request for block `num` of `size` bytes of the manifest ("m") or
        the body ("b"): (seconds to hold it back, bytes, more), or None when there is no
        such block (past the end). Any RFC 7959 size is served, as the node asks."""
        now = self.clock() if now is None else now
        data = self.manifest if part == "m" else self.body
        off = num * size
        if off >= len(data) and not (off == 0 and not data):
            return None
        chunk = data[off:off + size]
        if part == "b" and self.state == "sending":
            self.at = min(off, self.size)  # the node asks for the block holding the first byte it lacks
        self.active = now
        self.blocks += 1
        self.sent_bytes += len(chunk)
        return self._delay(len(chunk), now), chunk, off + size < len(data)

    def _delay(self, n: int, now: float) -> float:
        # a token bucket of one block: a node asking faster than `rate` waits for its answers
        self._tokens = min(self._tokens + (now - self._last) * self.rate, float(max(self.block_size, n)))
        self._last = now
        self._tokens -= n
        return max(0.0, -self._tokens / self.rate)

    def stalled(self, now: float, stall: float) -> bool:
        """Sending, and the node has asked nothing for `stall` seconds (or was never offered it)."""
        return self.state == "sending" and (not self.offers or now - self.active >= stall)

    def report(self, text: str) -> bool:
        """A node's `update` record about this release; True if it changed the delivery's state."""
        version, _, rest = text.partition(":")
        if version != releases.version_text(self.version):
            return False
        outcome, _, why = rest.partition(":")
        if outcome == "received" and self.state == "sending":
            self.state, self.at, self.finished = "sent", self.size, self.clock()
        elif outcome == "installed" and self.state in ("sending", "sent"):
            self.state, self.at = "installed", self.size
            self.finished = self.finished or self.clock()
        elif outcome == "confirmed" and self.state not in ENDED:
            self.state, self.at = "confirmed", self.size
        elif outcome in ("refused", "rolled_back") and self.state not in ENDED:
            self.state, self.error = "failed", rest
        else:
            return False
        return True

    def progress(self, now: float | None = None) -> dict:
        now = self.clock() if now is None else now
        end = self.finished or now
        elapsed = max(end - self.started, 1e-9)
        rate = self.at / elapsed
        return {"node": self.node, "version": releases.version_text(self.version), "state": self.state,
                "bytes": self.at, "size": self.size, "percent": round(100.0 * self.at / max(self.size, 1), 1),
                "rate_bps": round(rate, 1), "eta_s": round((self.size - self.at) / rate, 1) if rate > 0 and
                self.state == "sending" else None, "seconds": round(elapsed, 1), "sent_bytes": self.sent_bytes,
                "blocks": self.blocks, "offers": self.offers, "error": self.error, "rid": self.rid}


class Rollout:
    """The deliveries of a gateway, one per node, kept in `state_path` (JSON) so a gateway
    restart resumes each one where its node stands."""

    def __init__(self, public_key: bytes, state_path: Path | None = None, block_size: int = 512,
                 rate: float = 4096.0, clock=time.time):
        self.public_key = public_key
        self.state_path = state_path
        self.block_size, self.rate, self.clock = block_size, rate, clock
        self.deliveries: dict[str, Delivery] = {}
        self.release_files: dict[str, str] = {}
        self._restoring = False
        if state_path is not None and state_path.exists():
            self._restore()

    def add(self, node: str, release_file: Path, running: tuple[int, int, int] | None = None,
            cloud_id: str = "") -> Delivery:
        """Queue a release for a node (replacing one it had); releases.ReleaseError if it is
        forged, damaged or not newer. `cloud_id`: the cloud command's id, kept with the delivery
        (a restart too) until its outcome is answered."""
        manifest, sign1, parts = releases.read(Path(release_file).read_bytes(), self.public_key, running)
        d = Delivery(node, manifest.version, sign1, b"".join(parts), self.block_size, self.rate, self.clock)
        d.cloud_id = cloud_id
        before = self.deliveries.get(node), self.release_files.get(node)
        self.deliveries[node] = d
        self.release_files[node] = str(release_file)
        try:
            self.save()
        except OSError:  # not on disk (a full disk): not queued either, the node's delivery as it was
            for table, old in zip((self.deliveries, self.release_files), before):
                if old is None:
                    table.pop(node, None)
                else:
                    table[node] = old
            raise
        return d

    def cancel(self, node: str) -> bool:
        """Forget a node's delivery: its next block request is answered 4.04."""
        gone = self.deliveries.pop(node, None)
        self.release_files.pop(node, None)
        self.save()
        return gone is not None

    def serve(self, node: str, rid: str, part: str, num: int, size: int):
        d = self.deliveries.get(node)
        if d is None or d.rid != rid or d.state in ENDED or part not in ("m", "b"):
            return None
        return d.serve(part, num, size)

    def report(self, node: str, text: str) -> Delivery | None:
        """A node's `update` record; the delivery if it changed (saved)."""
        d = self.deliveries.get(node)
        if d is None or not d.report(text):
            return None
        self.save()
        return d

    def due_offers(self, stall: float) -> list[Delivery]:
        """Deliveries to offer (again): never offered, or their node silent for `stall` seconds."""
        now = self.clock()
        return [d for d in self.deliveries.values() if d.stalled(now, stall)]

    def save(self) -> None:
        if self.state_path is None or self._restoring:
            return
        rows = {n: {"release": self.release_files[n], "at": d.at, "state": d.state, "error": d.error,
                    "started": d.started, "finished": d.finished, "offers": d.offers,
                    "cloud_id": d.cloud_id}
                for n, d in self.deliveries.items()}
        write_atomic(self.state_path, json.dumps(rows, sort_keys=True).encode())  # a power cut keeps old or new

    def _restore(self) -> None:
        rows = json.loads(self.state_path.read_text())
        self._restoring = True
        try:
            for node, row in rows.items():
                try:
                    d = self.add(node, Path(row["release"]))
                except (OSError, releases.ReleaseError) as exc:  # the file gone or replaced: that delivery ends
                    log.warning("dropped the update of %s: its release %s cannot be read again: %s", node,
                                row["release"], exc)
                    continue
                d.state, d.error, d.at = row["state"], row["error"], row["at"]
                d.started, d.finished = row.get("started", d.started), row.get("finished", 0.0)
                d.offers = row.get("offers", 0)  # offered again once `stall` passes with no request
                d.cloud_id = row.get("cloud_id", "")  # its outcome still owed to the cloud
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
