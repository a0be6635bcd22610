"""Files written whole or not at all.

`write_atomic` writes a temporary file beside the target, fsyncs it, renames it over the
target and fsyncs the folder, so a power cut or a `kill -9` at any point leaves either the
old file or the new one, never a torn or empty one, and a file reported written is on the
disk. A file that exists keeps its owner (where the writer may give it: root's `sudo
headrace node add` rewriting the service user's registry).

`write_together` does the same for files that must change together (the node registry and
a node's config, which both hold its key): every temporary is written and fsynced first, and
only then are they renamed into place, so a full disk on any of them leaves all as they were.

Usage:
    from gateway.runtime.files import write_atomic, write_together
    write_atomic(path, json.dumps(state).encode())          # mode 0o644
    write_atomic(path, secret, mode=0o600)                  # keys: readable by the owner only
    write_together([(config, cfg_bytes, 0o600), (registry, reg_bytes, 0o600)])

Caveats: the temporary (`<name>.tmp`) of the file whose write fails (a full disk: the
OSError goes to the caller, the targets are untouched) is left behind and overwritten by
the next write; those written before it are removed. Between `write_together`'s renames a
power cut can still leave the first file new and the next one old (a rename needs no room
on the disk, so a full disk cannot). Meant for small state files written on a change, not
per frame: each file costs two fsyncs.
"""
from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path | str, data: bytes, mode: int = 0o644) -> None:
    write_together([(path, data, mode)])


def write_together(files: list[tuple[Path | str, bytes, int]]) -> None:
    """Write each (path, data, mode) whole, none of them if any cannot be written."""
    written: list[tuple[Path, Path]] = []
    try:
        for path, data, mode in files:
            path = Path(path)
            written.append((_write_temporary(path, data, mode), path))
    except OSError:
        for tmp, _path in written:
            _remove(tmp)
        raise
    for tmp, path in written:
        os.replace(tmp, path)
    for folder in {path.parent for _tmp, path in written}:
        sync_dir(folder)


def _write_temporary(path: Path, data: bytes, mode: int) -> Path:
    """`<name>.tmp` beside `path`, holding `data`, mode `mode`, `path`'s owner, fsynced."""
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
    return tmp


def _remove(tmp: Path) -> None:
    try:
        tmp.unlink()
    except OSError:
        pass


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
