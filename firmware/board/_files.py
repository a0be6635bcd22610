# Files on the board's flash (LittleFS on esp32 and rp2) or the host's (unix): shared by
# every port.
import os


def read_file(path):
    """The file's bytes, None if there is none (no file object is made then: on LittleFS one
    takes a 252-byte block, which a small heap may not have after boot)."""
    try:
        os.stat(path)
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def write_file_atomic(path, data):
    """Write then rename (LittleFS and POSIX rename atomically): a power cut leaves the
    old or the new file, never half of one."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)
