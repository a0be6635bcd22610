# Node updates: two slots, a release signed by the release key, rollback (docs/installer.md,
# "Updating nodes"; the release format is gateway/tools/release.py's).
#
# Under `root` (a folder on the board's flash):
#   state        JSON, written atomically: the active slot, the slots' versions, whether the
#                active slot is on trial (not yet confirmed) and for how many boots, a
#                verified-and-received slot waiting for the next boot, the last outcome
#   0/ 1/        the slots: the parts of a release (.mpy files) and its manifest.cose.
#                A slot without manifest.cose is the base: the firmware flashed by cable
#                (/lib or frozen), which is what runs when the active slot is empty.
#
# Steps: Receiver.begin(manifest) checks the manifest's form, the version against the
# running one and the target, and empties the spare slot; write(offset, data) appends the
# release's bytes (resumable: where it stands is read back from the files' sizes), checking
# each part's SHA-256 once complete; finish() marks the slot pending. boot(), run before
# any other firmware module is imported (a heap with nothing else in it), verifies the
# manifest's Ed25519 signature and every part again, switches slots and puts the slot on
# trial; every boot on trial is counted, and past MAX_TRIAL_BOOTS the old slot is active
# again. Slots.confirm() ends the trial once the gateway has acked a frame of the new code.
# Every outcome is a text the node reports in its next frame (record `update`); the
# running node's side of it is bootstage.Trial.
import gc
import hashlib
import json
import os
import sys

import board
import cbor

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython: micropython-lib's fallback
        return x

MAX_TRIAL_BOOTS = const(3)  # boots a new slot gets to be confirmed before the old one is back
_TAG_SIGN1 = const(18)  # RFC 9052 §4.2
_ALG_EDDSA = const(-8)  # RFC 9053 §2.2
_HDR_ALG = const(1)
_HDR_KID = const(4)
_FORMAT = const(1)
_MAX_PARTS = const(64)
_MAX_PART = const(65536)
_SIGN1_HEAD = b"\x84\x6aSignature1"  # array(4), text(10) "Signature1"
MANIFEST = "manifest.cose"
_CHUNK = const(256)  # bytes read at a time when hashing a part (heap, not speed)


class UpdateError(Exception):
    """A release refused: `reason` is what the node reports ("format", "signature", "hash",
    "size", "downgrade", "target", "busy", "bad"), `detail` what was wrong."""

    def __init__(self, reason, detail=""):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


def version_text(v):
    return "%d.%d.%d" % (v[0], v[1], v[2])


def target():
    """This interpreter's .mpy major version as a release target ("mpy6"); None on CPython."""
    mpy = getattr(sys.implementation, "_mpy", None)
    return None if mpy is None else "mpy%d" % (mpy & 0xFF)


# -- the manifest ----------------------------------------------------------------------------

def open_sign1(msg):
    """(protected, payload, signature) of a COSE_Sign1 with EdDSA; UpdateError("format")."""
    try:
        obj = cbor.loads(msg)
    except (ValueError, TypeError, IndexError):
        raise UpdateError("format", "manifest is not CBOR")
    if not isinstance(obj, cbor.Tag) or obj.tag != _TAG_SIGN1 or not isinstance(obj.value, list) \
            or len(obj.value) != 4:
        raise UpdateError("format", "manifest is not a COSE_Sign1")
    protected, _, payload, signature = obj.value
    for item in (protected, payload, signature):
        if not isinstance(item, bytes):
            raise UpdateError("format", "COSE_Sign1 items of the wrong type")
    header = cbor.loads(protected)
    if not isinstance(header, dict) or header.get(_HDR_ALG) != _ALG_EDDSA:
        raise UpdateError("format", "manifest not signed with EdDSA")
    return protected, payload, signature


def sig_structure(protected, payload):
    out = bytearray(_SIGN1_HEAD)
    cbor.head(2, len(protected), out)
    out.extend(protected)
    out.append(0x40)  # external_aad: h''
    cbor.head(2, len(payload), out)
    out.extend(payload)
    return out


def _name_ok(name):
    if not isinstance(name, str) or not 0 < len(name) <= 64 or name[0] == "/" or ".." in name:
        return False
    for c in name:
        if not ("a" <= c <= "z" or "A" <= c <= "Z" or "0" <= c <= "9" or c in "_./"):
            return False
    return True


def parse_manifest(payload):
    """{"version": (a, b, c), "target", "size", "parts": [(name, size, sha256)]}; UpdateError."""
    try:
        m = cbor.loads(payload)
        version = tuple(m["version"])
        parts = [(p[0], p[1], p[2]) for p in m["parts"]]
        ok = m["fmt"] == _FORMAT and len(version) == 3 and isinstance(m["target"], str)
    except (ValueError, TypeError, KeyError, IndexError):
        raise UpdateError("format", "not a release manifest")
    if not ok or not 0 < len(parts) <= _MAX_PARTS:
        raise UpdateError("format", "not a release manifest")
    total = 0
    for name, size, digest in parts:
        if not _name_ok(name) or not isinstance(size, int) or not 0 <= size <= _MAX_PART \
                or not isinstance(digest, bytes) or len(digest) != 32:
            raise UpdateError("format", "bad part %s" % name)
        total += size
    if total != m["size"]:
        raise UpdateError("size", "parts add up to %d bytes, not %d" % (total, m["size"]))
    return {"version": version, "target": m["target"], "size": total, "parts": parts}


def check_manifest(manifest, running, node_target, bad=None):
    v = manifest["version"]
    if v <= tuple(running):
        raise UpdateError("downgrade", "%s is not newer than %s" % (version_text(v), version_text(running)))
    if bad is not None and v == tuple(bad):
        raise UpdateError("bad", "%s was rolled back before" % version_text(v))
    if node_target is not None and manifest["target"] != node_target:
        raise UpdateError("target", "built for %s, this node runs %s" % (manifest["target"], node_target))


# -- files -----------------------------------------------------------------------------------

def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def _rmtree(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        p = path + "/" + name
        if os.stat(p)[0] & 0x4000:  # S_IFDIR
            _rmtree(p)
        else:
            os.remove(p)
    os.rmdir(path)


def _makedirs(path):
    part = ""
    for seg in path.split("/"):
        part = part + "/" + seg if part or path[0] == "/" else seg
        if seg and _size(part) < 0:
            os.mkdir(part)


def sha256_file(path):
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    mv = memoryview(buf)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(mv[:n])
    return h.digest()


# -- the slots -------------------------------------------------------------------------------

class Slots:
    """The two slots and their state file under `root`. `base_version` is the version of
    the firmware flashed by cable (what an empty slot runs)."""

    def __init__(self, root, base_version=(0, 0, 0)):
        self.root = root
        _makedirs(root)
        raw = board.read_file(root + "/state")
        st = None
        if raw:
            try:
                st = json.loads(raw)
            except ValueError:
                st = None  # torn by hand or by a bug: the base is safe
        if not isinstance(st, dict):
            st = {"active": 0, "versions": [list(base_version), None], "trial": 0, "boots": 0,
                  "pending": None, "bad": None}
        self.st = st

    def save(self):
        board.write_file_atomic(self.root + "/state", json.dumps(self.st).encode())

    def dir(self, slot):
        return "%s/%d" % (self.root, slot)

    @property
    def active(self):
        return self.st["active"]

    @property
    def spare(self):
        return 1 - self.st["active"]

    @property
    def version(self):
        return tuple(self.st["versions"][self.st["active"]])

    @property
    def on_trial(self):
        return bool(self.st["trial"])

    def path(self):
        """The folder to put first on sys.path, or None when the active slot is the base."""
        d = self.dir(self.active)
        return d if _size(d + "/" + MANIFEST) >= 0 else None

    def confirm(self):
        """The gateway acked a frame from the slot on trial: it is good. The text to report, or None."""
        if not self.st["trial"]:
            return None
        self.st["trial"] = 0
        self.st["boots"] = 0
        self.save()
        return version_text(self.version) + ":confirmed"


# -- receiving -------------------------------------------------------------------------------

class Receiver:
    """Writes a release into the spare slot. A Receiver made after a reboot on the same
    slots resumes where the files stand."""

    def __init__(self, slots):
        self.slots = slots
        self.manifest = None
        self.pos = 0
        d = slots.dir(slots.spare)
        raw = board.read_file(d + "/" + MANIFEST)
        if raw and slots.st["pending"] is None and not slots.on_trial:
            try:
                self.manifest = parse_manifest(open_sign1(raw)[1])
                self.pos = self._scan(self.manifest)
            except UpdateError:
                self.manifest = None

    def begin(self, sign1, node_target=None):
        """A release's manifest (the COSE_Sign1 bytes): resume it, or start it afresh.
        The offset to send from. UpdateError if the node takes no such release now."""
        slots = self.slots
        if slots.on_trial or slots.st["pending"] is not None:
            raise UpdateError("busy", "%s not confirmed yet" % version_text(slots.version))
        manifest = parse_manifest(open_sign1(sign1)[1])
        check_manifest(manifest, slots.version, node_target, slots.st["bad"])
        d = slots.dir(slots.spare)
        if self.manifest is not None and board.read_file(d + "/" + MANIFEST) == bytes(sign1):
            return self.pos  # the same release: resume
        _rmtree(d)
        _makedirs(d)
        slots.st["versions"][slots.spare] = None
        slots.save()
        # the manifest first, atomically: after a reboot it says which release the parts on
        # flash belong to (the slot is not pending until finish())
        board.write_file_atomic(d + "/" + MANIFEST, bytes(sign1))
        self.manifest = manifest
        self.pos = 0
        return 0

    @staticmethod
    def _locate(parts, pos):
        """(index of the part holding byte `pos`, offset in it)."""
        for i, (_, size, _) in enumerate(parts):
            if pos < size:
                return i, pos
            pos -= size
        return len(parts), 0

    def _scan(self, manifest):
        d = self.slots.dir(self.slots.spare)
        pos = 0
        for name, size, digest in manifest["parts"]:
            have = _size(d + "/" + name)
            if have == size and sha256_file(d + "/" + name) == digest:
                pos += size
                continue
            if 0 <= have < size:
                return pos + have
            if have >= 0:
                os.remove(d + "/" + name)  # too long or a bad hash: start the part again
            return pos
        return pos

    def write(self, offset, data):
        """Bytes of the release from `offset` on. Returns where the node stands (the next
        offset it wants): of a block that starts before it, the bytes it lacks are taken;
        bytes from elsewhere are ignored (a repeat, or a gap). A part
        whose SHA-256 is wrong once complete raises UpdateError("hash"): the slot is emptied."""
        manifest = self.manifest
        if manifest is None or not offset <= self.pos < offset + len(data):
            return self.pos
        d = self.slots.dir(self.slots.spare)
        parts = manifest["parts"]
        mv = memoryview(data)[self.pos - offset:]  # a block that starts before where the node stands
        while len(mv):
            i, at = self._locate(parts, self.pos)
            if i >= len(parts):
                break  # more bytes than the release has: ignored
            name, size, digest = parts[i]
            n = min(size - at, len(mv))
            path = d + "/" + name
            if at == 0 and "/" in name:
                _makedirs(d + "/" + name[:name.rfind("/")])
            gc.collect()  # a file object (about 250 B) on a small heap: holes joined first
            with open(path, "ab" if at else "wb") as f:
                f.write(mv[:n])
            self.pos += n
            mv = mv[n:]
            if at + n == size and sha256_file(path) != digest:
                self.abort()
                raise UpdateError("hash", "%s does not match the manifest" % name)
        return self.pos

    def done(self):
        return self.manifest is not None and self.pos == self.manifest["size"]

    def finish(self):
        """Every byte is in: the slot waits for the next boot, which verifies and switches."""
        if not self.done():
            raise UpdateError("size", "%d of %d bytes" % (self.pos, self.manifest["size"] if self.manifest else 0))
        self.slots.st["pending"] = self.slots.spare
        self.slots.save()

    def abort(self):
        _rmtree(self.slots.dir(self.slots.spare))
        self.manifest = None
        self.pos = 0


# -- the boot stage ----------------------------------------------------------------------------

def verify_slot(slots, slot, public, running, node_target):
    """Check a received slot: its manifest's signature by `public`, each part's SHA-256 and
    size, the version and target. The manifest dict; UpdateError otherwise."""
    import ed25519
    d = slots.dir(slot)
    raw = board.read_file(d + "/" + MANIFEST)
    if not raw:
        raise UpdateError("format", "no manifest in slot %d" % slot)
    protected, payload, signature = open_sign1(raw)
    if not ed25519.verify(public, sig_structure(protected, payload), signature):
        raise UpdateError("signature", "manifest not signed by the release key")
    manifest = parse_manifest(payload)
    check_manifest(manifest, running, node_target, slots.st["bad"])
    for name, size, digest in manifest["parts"]:
        if _size(d + "/" + name) != size or sha256_file(d + "/" + name) != digest:
            raise UpdateError("hash", "%s does not match the manifest" % name)
    return manifest


def _claimed_version(d):
    """The version a slot's manifest claims, signed or not (for reports only)."""
    try:
        return version_text(parse_manifest(open_sign1(board.read_file(d + "/" + MANIFEST))[1])["version"])
    except (UpdateError, TypeError, ValueError):
        return "?"


def boot(root, public, base_version=(0, 0, 0), node_target=None, max_boots=MAX_TRIAL_BOOTS):
    """The boot stage: install a pending slot (verified), count a boot on trial and roll
    back past `max_boots`, and put the active slot first on sys.path. Returns (Slots, the
    texts to report). Never raises for a bad release: it is refused and reported."""
    slots = Slots(root, base_version)
    st = slots.st
    reports = []
    pending = st["pending"]
    if pending is not None:
        print('{"ev": "verify", "slot": %d}' % pending)  # the bench's mark: a check under way
        try:
            manifest = verify_slot(slots, pending, public, slots.version, node_target)
        except UpdateError as e:
            claimed = _claimed_version(slots.dir(pending))
            st["pending"] = None
            slots.save()
            _rmtree(slots.dir(pending))
            reports.append("%s:refused:%s:%s" % (claimed, e.reason, e.detail))
        else:
            st["versions"][pending] = list(manifest["version"])
            st["active"] = pending
            st["pending"] = None
            st["trial"] = 1
            st["boots"] = 0
            slots.save()  # the switch: one atomic write
            reports.append(version_text(manifest["version"]) + ":installed")
    if st["trial"]:
        st["boots"] += 1
        if st["boots"] > max_boots:
            bad = slots.version
            st["bad"] = list(bad)
            st["active"] = 1 - st["active"]
            st["trial"] = 0
            st["boots"] = 0
            reports.append("%s:rolled_back:not confirmed after %d boots" % (version_text(bad), max_boots))
        slots.save()
    path = slots.path()
    if path is not None and path not in sys.path:
        sys.path.insert(0, path)
    return slots, reports
