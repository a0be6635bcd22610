"""gateway/runtime/files.py: a file is replaced whole, with its mode, and a failed write leaves the old one;
files written together change all or none."""
from __future__ import annotations

import os

import pytest

from gateway.runtime import files
from gateway.runtime.files import write_atomic, write_together


def test_a_file_is_replaced_whole_with_its_mode(tmp_path):
    path = tmp_path / "state.json"
    write_atomic(path, b'{"a": 1}', mode=0o600)
    assert path.read_bytes() == b'{"a": 1}' and (path.stat().st_mode & 0o777) == 0o600
    write_atomic(path, b"x" * 100_000)
    assert path.read_bytes() == b"x" * 100_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]  # no temporary left


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "rollout.json"
    write_atomic(path, b"old")

    def full(fd, data):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(files.os, "write", full)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    write_atomic(path, b"new")  # the temporary left behind is overwritten
    assert path.read_bytes() == b"new" and not (tmp_path / "rollout.json.tmp").exists()
    assert os.listdir(tmp_path) == ["rollout.json"]


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_rewrite_by_root_keeps_the_files_owner(tmp_path):
    """`sudo headrace node add` rewrites the registry the service user owns: it stays theirs."""
    path = tmp_path / "nodes.toml"
    path.write_bytes(b"old")
    os.chown(path, 12345, 12346)
    write_atomic(path, b"new", 0o600)
    st = path.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (12345, 12346, 0o600) and path.read_bytes() == b"new"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux) for a real ENOSPC")
@pytest.mark.parametrize("full", ["a.json", "b.toml"])
def test_files_written_together_change_all_or_none(tmp_path, full):
    """Either file's temporary is /dev/full (the kernel's ENOSPC): neither file changes, no
    temporary is left; with room, both are replaced, with their modes."""
    a, b = tmp_path / "a.json", tmp_path / "b.toml"
    write_atomic(a, b"old a")
    write_atomic(b, b"old b", 0o600)
    (tmp_path / (full + ".tmp")).symlink_to("/dev/full")
    with pytest.raises(OSError, match="No space left") as err:
        write_together([(a, b"new a", 0o600), (b, b"new b", 0o600)])
    assert err.value.filename == str(tmp_path / full)
    assert a.read_bytes() == b"old a" and b.read_bytes() == b"old b"
    assert sorted(os.listdir(tmp_path)) == sorted(["a.json", "b.toml", full + ".tmp"])  # only the one that failed
    os.unlink(tmp_path / (full + ".tmp"))  # room again
    write_together([(a, b"new a", 0o600), (b, b"new b", 0o640)])
    assert (a.read_bytes(), b.read_bytes()) == (b"new a", b"new b")
    assert (a.stat().st_mode & 0o777, b.stat().st_mode & 0o777) == (0o600, 0o640)
    assert sorted(os.listdir(tmp_path)) == ["a.json", "b.toml"]
