"""Node updates at run time: releases queued by `headrace node update`, offered to nodes,
served block by block over their links, followed to the end (docs/installer.md, docs/protocol.md §9).

The planning is gateway/decisions/update.py's `Rollout`; this role wires it to the rest:
- `queue(nodes, data)`: POST /updates (the command line) or `cloud_command` (an `update`
  command on `cmd/<node>` or `cmd/_all`, the release in base64) — the release checked against
  `[update] public_key`, kept in `<data_dir>/updates/`, a delivery per node (with the cloud
  command's id, so its outcome is answered once, after a gateway restart too);
- `run()`: offers each delivery to its node (the command `update`, riding the acks,
  gateway/decisions/downlink.py) at first and whenever the node has gone quiet;
- `coap(...)`: the answer to a node's block request, a CoAP message with a Block2 option,
  from the CoAP transport (UDP) and from the serial transport (CoAP in serial frames);
- `report(node, text)`: the node's `update` records (from the pipeline).

Configuration: `[update] public_key, block_size, rate, stall`; off without a public key.
Usage: the service makes one `Updates` when `[update] public_key` is set.
Caveats: a release refused by a node (a forged or damaged one, a downgrade) ends its
delivery as `failed`: counted in `headrace_update_outcomes_total`, logged with what to do; send
it again after fixing (a newer version for a release rolled back).
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from gateway.decisions.update import ENDED, STATES, Rollout, release_id
from gateway.protocol.coap import CoapFormatError, block as block_option, encode, parse_block, uint
from gateway.protocol.numbers import (
    COAP_ACK,
    COAP_BAD_OPTION,
    COAP_BAD_REQUEST,
    COAP_CON,
    COAP_NON,
    COAP_NOT_FOUND,
    COAP_OPT_BLOCK2,
    COAP_OPT_SIZE2,
    COAP_OPT_URI_PATH,
    COAP_OPT_URI_QUERY,
)
from gateway.runtime.files import write_atomic
from gateway.tools import release as releases

log = logging.getLogger("headrace.update")
COAP_GET = 0x01      # 0.01 (RFC 7252 §12.1.1)
COAP_CONTENT = 0x45  # 2.05
_KNOWN = {COAP_OPT_URI_PATH, COAP_OPT_URI_QUERY, COAP_OPT_BLOCK2}

# what an operator does about each refusal a node reports (docs/installer.md's table)
FIXES = {
    "signature": "the node trusts another release key: build with the key whose release.pub the node was given",
    "hash": "a part arrived damaged or altered on the way: send the release again",
    "downgrade": "build a newer version than the node runs",
    "bad": "this version was rolled back on the node before: build a newer one",
    "busy": "the node still has an update on trial: wait for its confirmed report, then send again",
    "target": "the release is for another MicroPython (.mpy) version than the node's",
    "format": "not a release this firmware reads: rebuild it with headrace release build",
    "storage": "the node's flash is full or failing",
    "size": "the transfer ended before the whole release arrived (a truncated body on the way): send it again",
    "rolled_back": "the release did not come up healthy: fix it and build a newer version",
}


class Updates:
    def __init__(self, settings, data_dir: str, downlink, metrics, registry):
        self.settings, self.downlink, self.metrics, self.registry = settings, downlink, metrics, registry
        self.public_key = releases.load_public(Path(settings.public_key))
        self.dir = Path(data_dir) / "updates"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rollout = Rollout(self.public_key, self.dir / "rollout.json", settings.block_size, settings.rate)
        self._answered: set[tuple[str, str]] = set()  # (node, cloud id) answered, its row not yet committed
        for d in self.rollout.deliveries.values():
            if d.state not in ENDED:
                log.info("resuming the update of %s to %s (%d of %d bytes)", d.node,
                         releases.version_text(d.version), d.at, d.size)

    # -- queueing ------------------------------------------------------------------------

    def queue(self, nodes: list[str], data: bytes, cloud_id: str = "") -> list[dict]:
        """Queue a release for nodes (all registered ones for ["*"]); ReleaseError (counted and
        logged) for a forged, damaged or unreadable release, ValueError for an unknown node.
        `cloud_id`: the cloud command's id, saved with each delivery, its outcome answered."""
        names = sorted(self.registry.nodes) if nodes == ["*"] else list(nodes)
        unknown = [n for n in names if self.registry.by_kid(n.encode()) is None]
        if unknown or not names:
            raise ValueError(f"unknown node {unknown[0]!r}: not in the registry" if unknown else "no node named")
        try:
            _, sign1, _ = releases.read(data, self.public_key)
        except releases.ReleaseError as exc:
            self.metrics.inc("headrace_update_releases_refused_total", reason=exc.reason)
            log.warning("refused a release for %s: %s (fix: build and sign it with the release key whose "
                        "release.pub is [update] public_key)", ", ".join(names), exc)
            raise
        path = self.dir / f"{release_id(sign1)}.hrr"
        out = []
        try:
            write_atomic(path, data)  # whole and on the disk before any delivery refers to it
            for name in names:
                d = self.rollout.add(name, path, cloud_id=cloud_id)  # queued once its state is on disk
                self.metrics.inc("headrace_update_outcomes_total", outcome="queued")
                log.info("update of %s to %s queued (%d bytes, release %s)", name,
                         releases.version_text(d.version), d.size, d.rid)
                out.append(d.progress())
        except OSError as exc:  # a full disk: the files are whole, old or new, and what is not saved not queued
            self.metrics.inc("headrace_update_releases_refused_total", reason="storage")
            log.warning("cannot keep the release for %s in %s: %s (fix: free space on that disk, then post the "
                        "release again; %s)", ", ".join(names[len(out):]), self.dir, exc,
                        f"queued for {', '.join(names[:len(out)])} only" if out else "nothing was queued")
            raise
        finally:
            if out:
                self._offer_due()
        return out

    def cloud_command(self, node: str, obj: dict):
        """`{"id", "cmd": "update", "args": {"release": base64}}` from cmd/<node> (cmd/_all: every
        registered node): queued, answered `queued` by the uplink and later `applied` (confirmed)
        or `failed` on cmd_result/<node>. CommandError for a bad command or release."""
        import base64
        import binascii

        from gateway.decisions.downlink import Command, CommandError

        cid, args = obj.get("id"), obj.get("args")
        if not isinstance(cid, str) or not 0 < len(cid) <= 64:
            raise CommandError("id must be a string of 1 to 64 characters")
        if not isinstance(args, dict) or not isinstance(args.get("release"), str) or set(args) != {"release"}:
            raise CommandError('update takes one argument: "release", a release file in base64')
        try:
            data = base64.b64decode(args["release"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CommandError(f"release is not base64: {exc}") from None
        try:
            queued = self.queue(["*"] if node == "_all" else [node], data, cloud_id=cid)
        except releases.ReleaseError as exc:
            raise CommandError(f"release refused: {exc}") from None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:  # a full disk (counted and logged by queue): rejected, nothing queued
            raise CommandError(f"the gateway cannot keep the release: {exc.strerror or exc}; free space on "
                               "the disk of its data_dir, then send it again") from None
        return Command(node, cid, "update", {"nodes": [p["node"] for p in queued]})

    def cancel(self, node: str) -> bool:
        return self.rollout.cancel(node)

    # -- offering --------------------------------------------------------------------------

    async def run(self, period: float = 1.0) -> None:
        """Offer due deliveries and keep the gauges; until cancelled."""
        for d in list(self.rollout.deliveries.values()):
            self._answer_cloud(d)  # an outcome reached just before a restart, not yet answered
        while True:
            self._offer_due()
            self._gauges()
            await asyncio.sleep(period)

    def _offer_due(self) -> None:
        for d in self.rollout.due_offers(self.settings.stall):
            waiting = [c for c in self.downlink.pending(d.node) if c.cmd == "update"]
            if waiting:
                continue  # an offer still rides the acks: the node has not answered it yet
            d.offered()
            self.downlink.put(d.node, "update", d.offer_args(), f"update-{d.rid[:8]}-{d.offers}")

    def _gauges(self) -> None:
        m = self.metrics
        for state, n in self.rollout.counts().items():
            m.set("headrace_updates", n, state=state)
        for d in self.rollout.deliveries.values():
            m.set("headrace_update_bytes", d.at, node=d.node)
            m.set("headrace_update_size_bytes", d.size, node=d.node)
            for state in STATES:
                m.set("headrace_update_state", 1 if d.state == state else 0, node=d.node, state=state)

    def progress(self) -> list[dict]:
        return self.rollout.progress()

    def of(self, node: str) -> dict | None:
        d = self.rollout.deliveries.get(node)
        return d.progress() if d is not None else None

    def page_fields(self, node: str) -> dict:
        """The status page's `update` field of a node's row (StatusPage.node_extras)."""
        d = self.rollout.deliveries.get(node)
        if d is None:
            return {}
        p = d.progress()
        text = f"{p['version']} {p['state']}"
        if d.state == "sending":
            text += f" {p['percent']:.0f} %"
        elif d.state == "failed":
            text += f" ({d.error.split(':')[0]}{':' + d.error.split(':')[1] if d.error.count(':') else ''})"
        return {"update": text}

    # -- the nodes' reports ------------------------------------------------------------------

    def report(self, node: str, text: str) -> None:
        d = self.rollout.report(node, text)
        if d is None:
            return
        self.metrics.inc("headrace_update_outcomes_total", outcome=d.state)
        version = releases.version_text(d.version)
        if d.state == "failed":
            outcome, _, rest = d.error.partition(":")
            reason = rest.partition(":")[0] if outcome == "refused" else outcome
            self.metrics.inc("headrace_update_refused_total", reason=reason)
            why = rest.replace(":", ": ", 1) if outcome == "refused" else rest
            log.warning("node %s %s release %s: %s (fix: %s)", node, "refused" if outcome == "refused" else
                        "rolled back", version, why or outcome, FIXES.get(reason, "see the node's report"))
        else:
            p = d.progress()
            log.info("node %s: release %s %s (%d bytes in %.1f s)", node, version, d.state, d.size, p["seconds"])
        self._answer_cloud(d)
        self._gauges()

    def _answer_cloud(self, d) -> None:
        """The outcome of the cloud's command (applied or failed) on cmd_result/<node>, once.
        Its id is forgotten, and the delivery saved, only once the answer is durable (its row in
        the spool committed, with the downlink's ledger): a kill -9 between the two answers it
        again after the restart (the cloud keys answers by id and status), never not at all."""
        if d.state not in ENDED or not d.cloud_id or self.downlink.on_result is None:
            return
        cid = d.cloud_id
        if (d.node, cid) in self._answered:
            return  # answered; its id goes at the commit
        answer = {"id": cid, "status": "applied" if d.state == "confirmed" else "failed"}
        if d.error:
            answer["error"] = d.error
        self.downlink.on_result(d.node, answer)
        self._answered.add((d.node, cid))

        def forget() -> None:
            self._answered.discard((d.node, cid))
            if d.cloud_id == cid:
                d.cloud_id = ""
                self.rollout.save()

        ledger = self.downlink.ledger
        if ledger is None:
            forget()
        else:
            ledger.after(ledger.epoch, forget)

    # -- serving blocks ------------------------------------------------------------------------

    def coap(self, mtype: int, code: int, mid: int, token: bytes, options: dict) -> tuple[float, bytes]:
        """The answer to a node's block request (seconds to hold it back, the CoAP message)."""
        reply = COAP_ACK if mtype == COAP_CON else COAP_NON
        path = options.get(COAP_OPT_URI_PATH, [])
        query = dict(q.decode("utf-8", "replace").partition("=")[::2] for q in options.get(COAP_OPT_URI_QUERY, []))
        if any(n & 1 and n not in _KNOWN for n in options):
            return 0.0, encode(reply, COAP_BAD_OPTION, mid, token)
        try:
            num, _, size = parse_block(options[COAP_OPT_BLOCK2][0]) if COAP_OPT_BLOCK2 in options else (0, False, 512)
        except CoapFormatError:
            num = -1
        if code != COAP_GET or len(path) != 3 or num < 0 or "n" not in query:
            self.metrics.inc("headrace_update_requests_total", result="bad")
            return 0.0, encode(reply, COAP_BAD_REQUEST, mid, token)
        node, rid, part = query["n"], path[1].decode("ascii", "replace"), path[2].decode("ascii", "replace")
        got = self.rollout.serve(node, rid, part, num, size)
        if got is None:
            self.metrics.inc("headrace_update_requests_total", result="not_found")
            return 0.0, encode(reply, COAP_NOT_FOUND, mid, token)
        delay, data, more = got
        self.metrics.inc("headrace_update_requests_total", result="ok")
        self.metrics.inc("headrace_update_sent_bytes_total", len(data), node=node)
        opts = [(COAP_OPT_BLOCK2, block_option(num, more, size))]
        if num == 0:  # RFC 7959 §4: the whole size, with the first block
            d = self.rollout.deliveries[node]
            opts.append((COAP_OPT_SIZE2, uint(len(d.manifest if part == "m" else d.body))))
        return delay, encode(reply, COAP_CONTENT, mid, token, opts, data)

