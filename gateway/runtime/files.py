"""Files written whole or not at all.

`write_atomic` writes a temporary file beside the target, fsyncs it, renames it over the
target and fsyncs the folder, so a power cut or a `kill -9` at any point leaves either the
old file or the new one, never a torn or empty one, and a file reported written is on the
disk. A file that exists keeps its owner (where the writer may give it: root's `sudo
headrace node add` rewriting the service user's registry).

Usage:
    from gateway.runtime.files import write_atomic
    write_atomic(path, json.dumps(state).encode())          # mode 0o644
    write_atomic(path, secret, mode=0o600)                  # keys: readable by the owner only

Caveats: the temporary (`<name>.tmp`) is left behind when the write itself fails (a full
disk: the OSError goes to the caller, the target is untouched) and is overwritten by the
next write. Meant for small state files written on a change, not per frame: each write
costs two fsyncs.
"""
from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path | str, data: bytes, mode: int = 0o644) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # exactly `mode`, whatever the umask (a unit file stays 0644 under umask 077)
        try:  # a file rewritten by root (sudo) stays its owner's: the service user's registry
            st = path.stat()
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(fd, st.st_uid, st.st_gid)
        except OSError:
            pass
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as exc:  # a write on a descriptor names no file: name the one meant
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    finally:
        os.close(fd)
    os.replace(tmp, path)
    sync_dir(path.parent)


def sync_dir(path: Path) -> None:
    """fsync a folder, so a rename or a new file in it is on the disk; quiet where the
    filesystem cannot (some network and FUSE filesystems)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
