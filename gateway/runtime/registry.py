"""The node registry: names, keys and metadata of the nodes this gateway accepts.

A TOML file, one table per node:

    [nodes.pump3]
    key = "64 hex characters"      # 32 bytes, made at provisioning
    transport = "serial"           # informational
"""
from __future__ import annotations

import hashlib
import os
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError
from gateway.protocol.names import NODE_NAME
from gateway.runtime.files import write_atomic

KEY_BYTES = 32


@dataclass(frozen=True)
class Node:
    name: str
    key: bytes
    transport: str = ""

    @property
    def key_id(self) -> str:
        """The first 8 hex digits of the key's SHA-256: tells keys apart without showing them."""
        return hashlib.sha256(self.key).hexdigest()[:8]


class Registry:
    """Nodes by kid (the node name as bytes)."""

    def __init__(self, nodes: dict[str, Node] | None = None, path: Path | None = None):
        self.nodes: dict[str, Node] = dict(nodes or {})
        self.path = path
        self._by_kid = {n.name.encode(): n for n in self.nodes.values()}  # changed in place, never replaced
        # by_kid(kid) -> Node | None: the dict's own get, which the compiled verifier calls for every
        # frame without a Python call of its own around it
        self.by_kid = self._by_kid.get

    def __len__(self) -> int:
        return len(self.nodes)

    def add(self, name: str, key: bytes | None = None, transport: str = "") -> Node:
        if not NODE_NAME.match(name):
            raise ConfigError(f"node {name!r}", "invalid name", "use 1-32 lowercase letters, digits, - or _")
        node = Node(name, key if key is not None else secrets.token_bytes(KEY_BYTES), transport)
        if len(node.key) != KEY_BYTES:
            raise ConfigError(f"[nodes.{name}] key", f"must be {KEY_BYTES} bytes", "make one with `headrace node provision`")
        self.nodes[name] = node
        self._by_kid[name.encode()] = node
        return node

    def remove(self, name: str) -> Node:
        """Forget a node; its frames are rejected (unknown kid) once the gateway reloads.
        Raises ConfigError if it is not registered."""
        node = self.node(name)
        del self.nodes[name]
        del self._by_kid[name.encode()]
        return node

    def rekey(self, name: str) -> Node:
        """A new random key for a registered node (the old one stops working at the next reload)."""
        old = self.node(name)
        return self.add(name, transport=old.transport)

    def node(self, name: str) -> Node:
        """The registered node `name`; ConfigError if there is none."""
        node = self.nodes.get(name)
        if node is None:
            where = f" in {self.path}" if self.path else ""
            raise ConfigError(f"node {name!r}", f"not registered{where}",
                              "see `headrace node list`, or provision it with `headrace node provision`")
        return node

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Registry":
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(str(path), "registry file not found",
                              "provision nodes with `headrace node provision NAME`, or set [gateway] registry") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"not valid TOML: {exc}", "fix the syntax at the line shown") from None
        reg = cls(path=path)
        for name, body in raw.get("nodes", {}).items():
            key_hex = body.get("key") if isinstance(body, dict) else None
            try:
                key = bytes.fromhex(key_hex or "")
            except ValueError:
                key = b""
            if len(key) != KEY_BYTES:
                raise ConfigError(f"[nodes.{name}] key", f"must be {KEY_BYTES * 2} hex characters",
                                  f"run `headrace node rekey {name}` to make a new key")
            reg.add(name, key, body.get("transport", ""))
        return reg

    def save(self, path: str | os.PathLike | None = None) -> None:
        """Write atomically (temp file + rename), readable by the owner only: it holds keys."""
        # run with sudo, a rewrite stays readable by the service user who owns the file (write_atomic)
        write_atomic(Path(path or self.path), self.render(), 0o600)

    def render(self) -> bytes:
        """The registry file's content (what `save` writes: mode 0600, it holds keys)."""
        lines = ["# headrace node registry: keys are secrets, keep this file mode 0600", ""]
        for node in sorted(self.nodes.values(), key=lambda n: n.name):
            lines += [f"[nodes.{node.name}]", f'key = "{node.key.hex()}"']
            if node.transport:
                lines.append(f'transport = "{node.transport}"')
            lines.append("")
        return "\n".join(lines).encode()
