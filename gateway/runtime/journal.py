"""The spool's journal: the commit log in front of SQLite, written once per commit with
O_DIRECT and O_DSYNC, so a commit of a few frames costs the disk a few 512-byte sectors.

Why: an fsync'd SQLite commit appends every page it touched to the WAL (about seven
1 KiB pages for a commit of one frame) and the kernel writes whole 4 KiB pages of it;
the pages go to the database file again at each checkpoint, and once more when the
uplink deletes the rows. At 100 frames a second and 40 commits a second that was 35x
the frames' own bytes. Here a commit is one sequential write of its entry, rounded up
to the sector size, that returns once the device has it.

Format: two segment files beside the spool (`<spool>-journal0`, `-journal1`), each
`size` bytes, zero-filled when made, so that a later write changes no file metadata and
needs no filesystem journal commit. Entries are written one after the other from the
start of a segment, each at a sector boundary::

    magic "HRJ1" | generation u32 | payload length u32 | CRC-32 of (generation, length,
    payload) u32 | payload (CBOR) | zero padding to the next 512 bytes

    payload = [first id, created, [[prio, body], ...], [[node, top, bitmap], ...],
               [[first deleted id, last deleted id], ...]]

Records get consecutive ids from `first id`. A segment's entries carry its generation,
which grows by one each time writing moves to the other segment: reading a segment stops
at the first entry that is torn (bad CRC) or left from an earlier generation. Entries
are written one at a time and each returns only once durable, so nothing valid follows
a torn entry.

The caller (the spool) keeps what the journal holds in memory and moves what is still
waiting in a segment into SQLite before that segment is written again.

Caveats: O_DIRECT is used where the filesystem offers it (ext4, f2fs, xfs); elsewhere
(tmpfs, some overlays) entries are written through the page cache with O_DSYNC, and a
commit costs a 4 KiB page instead. A flash device still programs whole pages inside;
what this saves is what the host sends it.
"""
from __future__ import annotations

import mmap
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cbor2

from gateway.runtime.files import sync_dir

MAGIC = b"HRJ1"
SECTOR = 512
_HEADER = struct.Struct("<4sIII")  # magic, generation, payload length, CRC-32
_ZEROS = bytes(1 << 20)


@dataclass
class Segment:
    """What recovery found in one segment file."""

    index: int
    generation: int = 0  # 0: no valid entry
    end: int = 0  # offset after the last valid entry
    entries: list = field(default_factory=list)  # decoded payloads, in order
    first_id: int | None = None  # the smallest and largest record ids written in it
    last_id: int | None = None


class Journal:
    """Two segment files of `size` bytes; `append()` writes one entry durably."""

    def __init__(self, base: Path, size: int):
        self.paths = [Path(f"{base}-journal{i}") for i in (0, 1)]
        self.size = size
        self._fd = [-1, -1]
        self._direct = True
        self._buf = mmap.mmap(-1, 1 << 16)
        self.cur, self.generation, self.pos = 0, 1, 0
        self.ranges: list[list[int | None]] = [[None, None], [None, None]]  # record ids per segment

    # -- files ----------------------------------------------------------------------------

    @staticmethod
    def existing_size(base: Path) -> int | None:
        """The segment size of a journal already beside the spool, or None."""
        sizes = {p.stat().st_size for p in (Path(f"{base}-journal{i}") for i in (0, 1)) if p.exists()}
        return max(sizes) if sizes else None

    def create(self) -> None:
        """Make both segments zero-filled (again, if they are missing or of another size)."""
        for path in self.paths:
            if path.exists() and path.stat().st_size == self.size:
                continue
            tmp = path.with_name(path.name + ".new")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                left = self.size
                while left:
                    left -= os.write(fd, _ZEROS[:min(left, len(_ZEROS))])
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        sync_dir(self.paths[0].parent)

    def remove(self) -> None:
        self.close()
        for path in self.paths:
            path.unlink(missing_ok=True)
        sync_dir(self.paths[0].parent)

    def _open(self, i: int) -> int:
        if self._fd[i] < 0:
            flags = os.O_RDWR | getattr(os, "O_DSYNC", os.O_SYNC)
            if self._direct and hasattr(os, "O_DIRECT"):
                try:
                    self._fd[i] = os.open(self.paths[i], flags | os.O_DIRECT)
                    return self._fd[i]
                except OSError:
                    self._direct = False
            self._fd[i] = os.open(self.paths[i], flags)
        return self._fd[i]

    def close(self) -> None:
        for i, fd in enumerate(self._fd):
            if fd >= 0:
                os.close(fd)
                self._fd[i] = -1

    # -- recovery -------------------------------------------------------------------------

    def recover(self) -> list[Segment]:
        """Read both segments; returns them oldest first and resumes writing after the newest."""
        segs = [self._scan(i) for i in (0, 1)]
        segs.sort(key=lambda s: s.generation)
        newest = segs[1]
        if newest.generation:
            self.cur, self.generation, self.pos = newest.index, newest.generation, newest.end
        else:
            self.cur, self.generation, self.pos = 0, 1, 0
        for s in segs:
            self.ranges[s.index] = [s.first_id, s.last_id]
        return segs

    def _scan(self, i: int) -> Segment:
        seg = Segment(i)
        path = self.paths[i]
        if not path.exists():
            return seg
        data = path.read_bytes()
        pos = 0
        while pos + _HEADER.size <= len(data):
            magic, gen, length, crc = _HEADER.unpack_from(data, pos)
            if magic != MAGIC or (seg.generation and gen != seg.generation) or gen == 0:
                break
            start, stop = pos + _HEADER.size, pos + _HEADER.size + length
            if stop > len(data) or zlib.crc32(data[start:stop], zlib.crc32(data[pos + 4:pos + 12])) != crc:
                break
            try:
                entry = cbor2.loads(data[start:stop])
            except (ValueError, cbor2.CBORDecodeError):
                break
            seg.generation = gen
            seg.entries.append(entry)
            if entry[2]:
                first, last = entry[0], entry[0] + len(entry[2]) - 1
                seg.first_id = first if seg.first_id is None else min(seg.first_id, first)
                seg.last_id = last if seg.last_id is None else max(seg.last_id, last)
            pos = _padded(stop)
        seg.end = pos
        return seg

    # -- writing --------------------------------------------------------------------------

    @staticmethod
    def encode(first_id: int, created: float, records, replay, deleted) -> bytes:
        return cbor2.dumps([first_id, created, records, replay, deleted])

    def fits(self, payload: bytes) -> bool:
        """Whether an entry of this payload fits in the current segment's space left."""
        return self.pos + _padded(_HEADER.size + len(payload)) <= self.size

    def too_big(self, payload: bytes) -> bool:
        """An entry this large goes to SQLite instead (a quarter of a segment)."""
        return _padded(_HEADER.size + len(payload)) > self.size // 4

    def next_segment(self) -> int:
        """Index of the segment the next switch writes (the older one)."""
        return 1 - self.cur

    def switch(self) -> None:
        """Write from the start of the other segment, in a new generation. The caller has
        moved what was waiting in it to SQLite first."""
        self.cur, self.generation, self.pos = 1 - self.cur, self.generation + 1, 0
        self.ranges[self.cur] = [None, None]

    def append(self, payload: bytes, first_id: int, n_records: int) -> int:
        """Write one entry at the current position; returns the bytes written. Raises OSError."""
        n = _padded(_HEADER.size + len(payload))
        if len(self._buf) < n:
            self._buf.close()
            self._buf = mmap.mmap(-1, _padded(n, mmap.PAGESIZE))
        head = struct.pack("<II", self.generation, len(payload))
        crc = zlib.crc32(payload, zlib.crc32(head))
        buf = self._buf
        buf[:_HEADER.size] = _HEADER.pack(MAGIC, self.generation, len(payload), crc)
        buf[_HEADER.size:_HEADER.size + len(payload)] = payload
        end = _HEADER.size + len(payload)
        buf[end:n] = bytes(n - end)
        fd = self._open(self.cur)
        view = memoryview(buf)[:n]
        try:
            written = os.pwrite(fd, view, self.pos)
        except OSError as exc:
            if not self._direct or exc.errno != 22:  # EINVAL: the device wants larger alignment
                raise
            self.close()
            self._direct = False
            written = os.pwrite(self._open(self.cur), view, self.pos)
        finally:
            view.release()
        if written != n:
            raise OSError(f"journal: short write ({written} of {n} bytes)")
        self.pos += n
        if n_records:
            lo, hi = self.ranges[self.cur]
            self.ranges[self.cur] = [first_id if lo is None else lo, first_id + n_records - 1]
        return n


def _padded(n: int, unit: int = SECTOR) -> int:
    return -(-n // unit) * unit
