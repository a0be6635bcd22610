"""gateway/runtime/files.py: a file is replaced whole, with its mode, and a failed write leaves the old one."""
from __future__ import annotations

import os

import pytest

from gateway.runtime import files
from gateway.runtime.files import write_atomic


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
