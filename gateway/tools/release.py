"""`headrace release keygen|build|verify`: signed firmware releases for node updates.

A release is one CBOR file, `[manifest, parts]`:

- `manifest`: the bytes of a COSE_Sign1 (RFC 9052 §4.2, CBOR tag 18) with algorithm
  EdDSA (-8, RFC 9053 §2.2: Ed25519, RFC 8032), kid = the first 8 bytes of SHA-256 of
  the release public key. Its payload is a CBOR map:
  `{"fmt": 1, "version": [major, minor, patch], "target": "mpy6", "size": total bytes,
  "parts": [[name, size, SHA-256], ...]}`
- `parts`: the parts' bytes, in the manifest's order (the firmware's modules compiled by
  mpy-cross, named as a node's slot holds them: `cbor.mpy`, `board/unix.mpy`, `node.mpy`
  for main.py).

The node checks the signature with the release public key it was provisioned with
(firmware/ed25519.py), each part's SHA-256 as it is written into the spare slot, and
that the version is newer than the one it runs (firmware/update.py).

Configuration: none. The private key is a PKCS#8 PEM file that `keygen` writes with mode
0600; keep it on the release machine, never on a gateway (the gateway only forwards
releases, it cannot make one). The public key file holds the 32 raw bytes in hex, the
form a node's config takes (`release_pub`).

Usage:
    headrace release keygen --out keys/                 # keys/release.pem, keys/release.pub
    headrace release build --key keys/release.pem --version 1.3.0 -o node-1.3.0.hrr
    headrace release verify node-1.3.0.hrr --pub keys/release.pub [--running 1.2.0]

Caveats: signing uses the `cryptography` package (OpenSSL's Ed25519), not code of our
own: on the host a well-kept, constant-time implementation is the right tool. The node,
which has no such library, verifies with a small pure-Python Ed25519 (firmware/ed25519.py)
that is checked against this one. Versions are three whole numbers compared in order.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cbor2

from gateway.errors import HeadraceError
from gateway.protocol.numbers import (
    COSE_ALG_EDDSA,
    COSE_HDR_ALG,
    COSE_HDR_KID,
    COSE_TAG_SIGN1,
    RELEASE_FORMAT,
    RELEASE_KID_BYTES,
    RELEASE_MAX_PART,
    RELEASE_MAX_PARTS,
    SIGN1_CONTEXT,
)

PART_NAME = re.compile(r"^[A-Za-z0-9_]+(/[A-Za-z0-9_]+)*\.(mpy|py|json|bin)$")


class ReleaseError(HeadraceError):
    """A release that must not be installed. `reason` is the counter label ("signature",
    "hash", "size", "downgrade", "target", "format"), `detail` says what is wrong."""

    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class Manifest:
    version: tuple[int, int, int]
    target: str
    size: int
    parts: list[tuple[str, int, bytes]]  # (name, size, sha256)

    def payload(self) -> bytes:
        return cbor2.dumps({"fmt": RELEASE_FORMAT, "version": list(self.version), "target": self.target,
                            "size": self.size, "parts": [[n, s, h] for n, s, h in self.parts]}, canonical=True)


def parse_version(text: str) -> tuple[int, int, int]:
    """"1.2.3" -> (1, 2, 3); ValueError naming the form otherwise."""
    m = re.fullmatch(r"(\d{1,6})\.(\d{1,6})\.(\d{1,6})", text.strip())
    if not m:
        raise ValueError(f"version {text!r}: use three whole numbers, e.g. 1.2.0")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def version_text(v) -> str:
    return ".".join(str(x) for x in v)


# -- keys --------------------------------------------------------------------------------------

def keygen(out: Path, force: bool = False) -> tuple[Path, Path]:
    """Write out/release.pem (private, mode 0600) and out/release.pub (32 bytes, hex)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out / "release.pem", out / "release.pub"
    if not force and (priv_path.exists() or pub_path.exists()):
        raise ReleaseError("format", f"{priv_path} or {pub_path} exists: keep the key you have "
                           "(nodes trust it), or pass --force to replace it")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub_path.write_text(public_bytes(key).hex() + "\n")
    return priv_path, pub_path


def public_bytes(private_key) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_private(path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ReleaseError("format", f"cannot read the release key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ReleaseError("format", f"{path} is not an Ed25519 key (make one with `headrace release keygen`)")
    return key


def load_public(path: Path) -> bytes:
    try:
        raw = bytes.fromhex(Path(path).read_text().strip())
    except (OSError, ValueError) as exc:
        raise ReleaseError("format", f"cannot read the release public key {path}: {exc}") from None
    if len(raw) != 32:
        raise ReleaseError("format", f"{path}: an Ed25519 public key is 32 bytes, this is {len(raw)}")
    return raw


def kid_of(public: bytes) -> bytes:
    return hashlib.sha256(public).digest()[:RELEASE_KID_BYTES]


# -- COSE_Sign1 --------------------------------------------------------------------------------

def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """RFC 9052 §4.4: ["Signature1", protected, external_aad = h'', payload]."""
    return cbor2.dumps([SIGN1_CONTEXT, protected, b"", payload])


def sign1(private_key, payload: bytes) -> bytes:
    protected = cbor2.dumps({COSE_HDR_ALG: COSE_ALG_EDDSA, COSE_HDR_KID: kid_of(public_bytes(private_key))},
                            canonical=True)
    signature = private_key.sign(sig_structure(protected, payload))
    return cbor2.dumps(cbor2.CBORTag(COSE_TAG_SIGN1, [protected, {}, payload, signature]))


def open_sign1(msg: bytes, public: bytes) -> bytes:
    """The payload of a COSE_Sign1 signed by `public`; ReleaseError("signature"|"format") otherwise."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    try:
        obj = cbor2.loads(msg)
    except (ValueError, cbor2.CBORDecodeError) as exc:
        raise ReleaseError("format", f"the manifest is not CBOR: {exc}") from None
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_TAG_SIGN1 or len(obj.value) != 4:
        raise ReleaseError("format", "the manifest is not a COSE_Sign1 (tag 18, 4 items)")
    protected, _unprotected, payload, signature = obj.value
    if not all(isinstance(x, bytes) for x in (protected, payload, signature)):
        raise ReleaseError("format", "COSE_Sign1 items of the wrong type")
    try:
        header = cbor2.loads(protected)
    except (ValueError, cbor2.CBORDecodeError):
        raise ReleaseError("format", "the protected header is not CBOR") from None
    if not isinstance(header, dict) or header.get(COSE_HDR_ALG) != COSE_ALG_EDDSA:
        raise ReleaseError("format", f"algorithm {header.get(COSE_HDR_ALG) if isinstance(header, dict) else '?'}"
                           f" is not EdDSA ({COSE_ALG_EDDSA})")
    if header.get(COSE_HDR_KID) != kid_of(public):
        raise ReleaseError("signature", f"signed by key {bytes(header.get(COSE_HDR_KID) or b'').hex() or '?'}, "
                           f"not by this release key ({kid_of(public).hex()})")
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, sig_structure(protected, payload))
    except InvalidSignature:
        raise ReleaseError("signature", "the manifest's signature does not verify with the release key") from None
    return payload


def parse_manifest(payload: bytes) -> Manifest:
    try:
        m = cbor2.loads(payload)
        version = tuple(int(x) for x in m["version"])
        parts = [(str(n), int(s), bytes(h)) for n, s, h in m["parts"]]
        if m["fmt"] != RELEASE_FORMAT or len(version) != 3:
            raise ValueError(f"format {m['fmt']!r}")
        manifest = Manifest(version, str(m["target"]), int(m["size"]), parts)  # type: ignore[arg-type]
    except (ValueError, TypeError, KeyError, cbor2.CBORDecodeError) as exc:
        raise ReleaseError("format", f"the manifest's payload is not a release manifest: {exc!r}") from None
    if not 0 < len(parts) <= RELEASE_MAX_PARTS:
        raise ReleaseError("format", f"{len(parts)} parts: a release has 1 to {RELEASE_MAX_PARTS}")
    for name, size, digest in parts:
        if not PART_NAME.match(name) or len(digest) != 32 or not 0 <= size <= RELEASE_MAX_PART:
            raise ReleaseError("format", f"part {name!r} ({size} bytes): a bad name, size or hash")
    if sum(s for _, s, _ in parts) != manifest.size:
        raise ReleaseError("size", f"the parts add up to {sum(s for _, s, _ in parts)} bytes, "
                           f"the manifest says {manifest.size}")
    return manifest


# -- build and verify --------------------------------------------------------------------------

def compile_firmware(fw: Path, out: Path, mpy_cross: str) -> dict[str, bytes]:
    """The firmware's modules named by firmware/manifest.py, compiled: slot name -> bytes."""
    from gateway.tools.flash import manifest_sources
    parts: dict[str, bytes] = {}
    for source in manifest_sources(fw):
        if "@micropython.viper" in (fw / source).read_text():
            # native code is for one arch, a release for every node of an .mpy version: the node
            # keeps the one its image or `node flash` gave it (cose falls back to hashlib without)
            continue
        name = "node.mpy" if source == "main.py" else source[:-3] + ".mpy"
        local = out / name
        local.parent.mkdir(parents=True, exist_ok=True)
        p = subprocess.run([mpy_cross, "-o", str(local), "-s", source, str(fw / source)],
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise ReleaseError("format", f"mpy-cross failed on firmware/{source}: {p.stderr.strip()}")
        parts[name] = local.read_bytes()
    return parts


def make(private_key, version: tuple[int, int, int], target: str, parts: dict[str, bytes]) -> bytes:
    """A release file's bytes from named parts."""
    names = sorted(parts)
    for name in names:
        if not PART_NAME.match(name):
            raise ReleaseError("format", f"part name {name!r}: letters, digits, _ and / only, with an extension")
    manifest = Manifest(version, target, sum(len(parts[n]) for n in names),
                        [(n, len(parts[n]), hashlib.sha256(parts[n]).digest()) for n in names])
    return cbor2.dumps([sign1(private_key, manifest.payload()), [parts[n] for n in names]])


def build(key: Path, version: str, output: Path, fw: Path | None = None, target: str | None = None) -> Manifest:
    """Compile the firmware and write a signed release to `output`."""
    from gateway.tools.flash import mpy_version, tool
    from gateway.tools.sim.nodes import firmware_dir
    fw = fw or firmware_dir()
    private_key = load_private(key)
    mpy_cross = tool("mpy-cross")
    with tempfile.TemporaryDirectory() as tmp:
        parts = compile_firmware(fw, Path(tmp), mpy_cross)
    data = make(private_key, parse_version(version), target or f"mpy{mpy_version(mpy_cross)}", parts)
    output.write_bytes(data)
    return read(data, public_bytes(private_key))[0]


def split(data: bytes) -> tuple[bytes, list[bytes]]:
    try:
        obj = cbor2.loads(data)
        manifest, parts = obj
        if not isinstance(manifest, bytes) or not all(isinstance(p, bytes) for p in parts):
            raise TypeError("items of the wrong type")
    except (ValueError, TypeError, cbor2.CBORDecodeError) as exc:
        raise ReleaseError("format", f"not a release file ([manifest, parts] in CBOR): {exc}") from None
    return manifest, list(parts)


def read(data: bytes, public: bytes, running: tuple[int, int, int] | None = None,
         target: str | None = None) -> tuple[Manifest, bytes, list[bytes]]:
    """Check a release file: signature, format, each part's size and SHA-256, and (when
    given) a version newer than `running` and the node's `target`. Returns (manifest,
    the COSE_Sign1 bytes, the parts); ReleaseError saying what is wrong otherwise."""
    sign1_bytes, parts = split(data)
    manifest = parse_manifest(open_sign1(sign1_bytes, public))
    if len(parts) != len(manifest.parts):
        raise ReleaseError("size", f"{len(parts)} parts in the file, {len(manifest.parts)} in the manifest")
    for (name, size, digest), body in zip(manifest.parts, parts):
        if len(body) != size:
            raise ReleaseError("size", f"{name}: {len(body)} bytes, the manifest says {size}")
        if hashlib.sha256(body).digest() != digest:
            raise ReleaseError("hash", f"{name}: SHA-256 {hashlib.sha256(body).hexdigest()[:16]}… "
                               f"is not the manifest's {digest.hex()[:16]}…")
    if running is not None and manifest.version <= tuple(running):
        raise ReleaseError("downgrade", f"version {version_text(manifest.version)} is not newer than "
                           f"{version_text(running)}")
    if target is not None and manifest.target != target:
        raise ReleaseError("target", f"built for {manifest.target}, the node runs {target}")
    return manifest, sign1_bytes, parts
