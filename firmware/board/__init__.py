# The board layer: one small interface per board (unix, esp32, rp2).
import sys

if sys.platform in ("linux", "darwin") or sys.implementation.name == "cpython":
    from board.unix import *  # noqa: F401,F403
else:
    raise ImportError("no board module for platform %r" % sys.platform)
