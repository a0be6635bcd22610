"""Downlink: commands from the cloud (MQTT `cmd/<node>`) to nodes, validated before use.

A command is a JSON object on `headrace/v1/<site>/<gateway>/cmd/<node>`:

    {"id": "c-17", "cmd": "set_period", "args": {"period_ms": 5000}}

| cmd | args |
|---|---|
| `set_period` | `period_ms`: 10 … 86,400,000 |
| `set_batch` | `batch`: 1 … 64 |
| `identify` | `seconds`: 1 … 600 (optional, default 10) |
| `reboot` | none |
| `update` | `release`: a release file in base64; also on `cmd/_all` (gateway/runtime/updates.py) |

Each command gets an answer on `cmd_result/<node>`: `{"id", "status": "queued"}`
(sent once the command is durable, `when_durable`) or `{"id", "status": "rejected",
"error": "…"}`. Valid commands wait in a
bounded queue per node (16; the oldest goes first when full, counted) until the
node's link carries them (`take`).

Delivery (docs/protocol.md §3): a node's queued commands ride in the acks the
gateway sends it (`for_ack`), MAC'd with the node's key and bound to the acked
frame's sequence number, so a replayed ack carries nothing the node will take.
A command stays in flight, repeated in every ack to that node, until the node
reports it in a frame (a SenML record `cmd` whose text value is `<id>:ok` or
`<id>:error:<why>`, `result`), or until it has ridden `MAX_TRIES` acks without an
answer. The outcome is answered on `cmd_result/<node>` too: `applied`, `failed`
(with the node's reason) or `expired`.

The gateway queues commands of its own the same way (`put`): the dispatcher's
`dispatch` (args `demand`, `need`, `x`, `y`, `priority`) to a resource's node, and
`recall` (args `demand`) when it takes a dispatch back.

Durability: with a ledger (gateway/decisions/ledger.py) each node's queued and in-flight
commands are a row of the spool's `decisions` table, committed with the frame or event
that changed them, and restored at start (`restore`); a command starts riding acks only
once its row is committed, so a `kill -9` never leaves a node holding a command the
gateway forgot. After a restart the commands in flight ride again from the first try;
the node answers a repeated id without applying it twice (docs/protocol.md §3).
"""
from __future__ import annotations

import collections
import json
from dataclasses import dataclass

from gateway.decisions.ledger import restore_rows

from firmware import protocol as node_protocol
from gateway.runtime.registry import Registry

FLEET_TARGET = "_fleet"  # cmd/_fleet: the fleet's loan commands (gateway/decisions/loans.py), never a node
QUEUE_PER_NODE = 16
PER_ACK = 4      # commands one ack carries
MAX_TRIES = 32   # acks a command rides without an answer before it expires
_SPEC = node_protocol.COMMANDS  # the node's own table of commands and argument ranges


class CommandError(ValueError):
    """A command that cannot be used; the message says why and what is allowed."""


@dataclass(frozen=True)
class Command:
    node: str
    id: str
    cmd: str
    args: dict


def parse(node: str, payload: bytes, registry: Registry) -> Command:
    """Validate one command; raise CommandError naming the problem."""
    if registry.by_kid(node.encode()) is None:
        raise CommandError(f"unknown node {node!r}: not in the registry")
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CommandError('a command is a JSON object: {"id": …, "cmd": …, "args": {…}}')
    cid = obj.get("id")
    if not isinstance(cid, str) or not 0 < len(cid) <= 64:
        raise CommandError("id must be a string of 1 to 64 characters")
    cmd = obj.get("cmd")
    if cmd not in _SPEC:
        raise CommandError(f"unknown cmd {cmd!r}: use one of {', '.join(sorted(_SPEC))}")
    args = obj.get("args", {})
    if not isinstance(args, dict):
        raise CommandError("args must be an object")
    spec = _SPEC[cmd]
    extra = set(args) - set(spec)
    if extra:
        raise CommandError(f"{cmd} takes no argument {sorted(extra)[0]!r}"
                           + (f" (it takes {', '.join(spec)})" if spec else ""))
    for name, (low, high, required) in spec.items():
        if name not in args:
            if required:
                raise CommandError(f"{cmd} needs {name} ({low} to {high})")
            continue
        value = args[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise CommandError(f"{cmd}: {name} must be a whole number from {low} to {high}, got {value!r}")
    return Command(node, cid, cmd, dict(args))


class Downlink:
    """Bounded per-node queues of validated commands, and the commands in flight."""

    def __init__(self, registry: Registry, per_node: int = QUEUE_PER_NODE, on_result=None, ledger=None):
        self.registry = registry
        self.per_node = per_node
        self.queues: dict[str, collections.deque] = {}
        self.inflight: dict[str, dict[str, list]] = {}  # node -> id -> [command, acks ridden]
        self.dropped = 0
        self.on_result = on_result  # (node, {"id", "status", ...}): the uplink answers on cmd_result
        self.ledger = ledger
        self._fleet = None  # the loans' submit, routed by gateway.decisions.loans.Loans when [fleet] is on
        self._update = None  # node updates' submit (gateway/runtime/updates.py) when [update] is on
        self._made: dict[tuple[str, str], int] = {}  # (node, id) -> ledger epoch it was queued at

    def _ready(self, command: Command) -> bool:
        """A command may ride an ack once the row that records it is committed."""
        if self.ledger is None:
            return True
        return self.ledger.durable(self._made.get((command.node, command.id), -1))

    def _changed(self, node: str) -> None:
        if self.ledger is not None:
            self.ledger.mark("commands", node, lambda: self._row(node))

    def _row(self, node: str):
        pending = self.pending(node)
        return [[c.id, c.cmd, c.args] for c in pending] or None

    def restore(self, rows) -> int:
        """Queue again the commands the spool's rows recorded [(kind, key, body)]; returns how many."""
        n = 0
        for node, commands in restore_rows(rows, "commands"):
            q = self.queues.setdefault(node, collections.deque())
            for cid, cmd, args in commands:
                q.append(Command(node, cid, cmd, args))
                n += 1
        return n

    def idle(self) -> bool:
        """No command waits for any node, nor rides an ack: every `for_ack` would be empty (a node's
        queue and its commands in flight are dropped when they empty)."""
        return not self.inflight and not self.queues

    def for_ack(self, node: str) -> list[Command]:
        """The commands the next ack to `node` carries: those in flight, topped up from
        the queue; one that has ridden MAX_TRIES acks unanswered expires instead."""
        flying = self.inflight.get(node)
        q = self.queues.get(node)
        if not flying and not q:
            return []
        flying = self.inflight.setdefault(node, {})
        while q and len(flying) < PER_ACK and self._ready(q[0]):
            c = q.popleft()
            self._made.pop((node, c.id), None)
            flying[c.id] = [c, 0]
        if q is not None and not q:
            del self.queues[node]
        out = []
        for cid, entry in list(flying.items()):
            if entry[1] >= MAX_TRIES:
                del flying[cid]
                self._changed(node)
                self._answer(node, {"id": cid, "status": "expired",
                                    "error": f"no answer from the node after {MAX_TRIES} acks"})
                continue
            entry[1] += 1
            out.append(entry[0])
        if not flying:
            del self.inflight[node]
        return out

    def result(self, node: str, text: str) -> bool:
        """A node's report `<id>:ok` or `<id>:error:<why>`; True if it answered a command in flight."""
        cid, _, rest = text.partition(":")
        flying = self.inflight.get(node, {})
        if cid not in flying:
            return False  # a repeat of a report already taken, or a command the gateway forgot (restart)
        del flying[cid]
        if not flying:
            self.inflight.pop(node, None)
        self._changed(node)
        ok = rest == "ok"
        answer = {"id": cid, "status": "applied" if ok else "failed"}
        if not ok:
            answer["error"] = rest.removeprefix("error:")
        self._answer(node, answer)
        return True

    def _answer(self, node: str, answer: dict) -> None:
        if self.on_result is not None:
            self.on_result(node, answer)

    def route_fleet(self, submit) -> None:
        """Where commands on cmd/_fleet go: `submit(payload) -> (id, cmd)`, raising a CommandError."""
        self._fleet = submit

    def route_updates(self, submit) -> None:
        """Where `{"cmd": "update", …}` goes: `submit(node, command object) -> Command`, raising a CommandError."""
        self._update = submit

    def submit(self, node: str, payload: bytes) -> Command:
        """Validate and queue; raise CommandError for a bad command. A fleet command (cmd/_fleet)
        is acted on at once and never queued; an update (`"cmd": "update"`, the release in
        `args.release` as base64) goes to node updates (cmd/<node>, or cmd/_all for every node)."""
        if node == FLEET_TARGET:
            if self._fleet is None:
                raise CommandError("fleet commands are off on this gateway (fix: [fleet] enabled = true)")
            cid, cmd = self._fleet(payload)
            return Command(node, cid, cmd, {})
        if b'"update"' in payload:
            try:
                obj = json.loads(payload)
            except (ValueError, UnicodeDecodeError):
                obj = None
            if isinstance(obj, dict) and obj.get("cmd") == "update":
                if self._update is None:
                    raise CommandError("node updates are off on this gateway (fix: [update] public_key)")
                return self._update(node, obj)
        return self._queue(parse(node, payload, self.registry))

    def put(self, node: str, cmd: str, args: dict, cid: str) -> Command:
        """Queue a command the gateway made itself (the dispatcher's), valid by construction."""
        return self._queue(Command(node, cid, cmd, dict(args)))

    def _queue(self, command: Command) -> Command:
        q = self.queues.setdefault(command.node, collections.deque())
        if len(q) >= self.per_node:
            gone = q.popleft()
            self._made.pop((gone.node, gone.id), None)
            self.dropped += 1
        q.append(command)
        if self.ledger is not None:
            self._made[(command.node, command.id)] = self.ledger.epoch
        self._changed(command.node)
        return command

    def take(self, node: str) -> list[Command]:
        """Every command waiting for a node, oldest first; its queue is emptied (the link carries them)."""
        q = self.queues.pop(node, None)
        if q:
            for c in q:
                self._made.pop((node, c.id), None)
            self._changed(node)
        return list(q) if q else []

    def when_durable(self, fn) -> None:
        """Call `fn()`, right after a `submit`, once what the submit changed is committed: a
        command's queue row, or a fleet command's loan (the ledger's open epoch); now without
        a ledger or with nothing marked. The uplinks send a command's `queued` answer through
        this, so a kill -9 cannot lose a command the cloud was told is queued."""
        if self.ledger is None:
            fn()
        else:
            self.ledger.after_marked(fn)

    def pending(self, node: str) -> list[Command]:
        """Queued and in-flight commands of a node, oldest first."""
        return [e[0] for e in self.inflight.get(node, {}).values()] + list(self.queues.get(node, ()))
