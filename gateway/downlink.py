"""Downlink: commands from the cloud (MQTT `cmd/<node>`) to nodes, validated before use.

A command is a JSON object on `headrace/v1/<site>/<gateway>/cmd/<node>`:

    {"id": "c-17", "cmd": "set_period", "args": {"period_ms": 5000}}

| cmd | args |
|---|---|
| `set_period` | `period_ms`: 10 … 86,400,000 |
| `set_batch` | `batch`: 1 … 64 |
| `identify` | `seconds`: 1 … 600 (optional, default 10) |
| `reboot` | none |

Each command gets an answer on `cmd_result/<node>`: `{"id", "status": "queued"}`
or `{"id", "status": "rejected", "error": "…"}`. Valid commands wait in a
bounded queue per node (16; the oldest goes first when full, counted) until the
node's link carries them.
"""
from __future__ import annotations

import collections
import json
from dataclasses import dataclass

from .registry import Registry

QUEUE_PER_NODE = 16
_SPEC = {
    "set_period": {"period_ms": (10, 86_400_000, True)},
    "set_batch": {"batch": (1, 64, True)},
    "identify": {"seconds": (1, 600, False)},
    "reboot": {},
}


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
    """Bounded per-node queues of validated commands."""

    def __init__(self, registry: Registry, per_node: int = QUEUE_PER_NODE):
        self.registry = registry
        self.per_node = per_node
        self.queues: dict[str, collections.deque] = {}
        self.dropped = 0

    def submit(self, node: str, payload: bytes) -> Command:
        """Validate and queue; raise CommandError for a bad command."""
        command = parse(node, payload, self.registry)
        q = self.queues.setdefault(node, collections.deque())
        if len(q) >= self.per_node:
            q.popleft()
            self.dropped += 1
        q.append(command)
        return command

    def pending(self, node: str) -> list[Command]:
        return list(self.queues.get(node, ()))
