# The unix board's names a node uses rarely or never in its steady state: sleep, reset, the
# status LED's codes, the network, the board's id. board/unix.py finds
# them here at their first use (its __getattr__), so a node that needs none of them keeps none
# of their functions on its heap. The interface is documented in board/__init__.py.
import os
import sys

from board.unix import read_file, sleep_ms


# -- power ------------------------------------------------------------------------------------

def lightsleep(ms):
    """The process sleeps: like a board in light sleep, nothing else runs meanwhile."""
    sleep_ms(ms)


def deepsleep(ms):
    """Sleep, then boot again: the process exits with 75, the code the bench's board
    supervisor (hil_tests/rig.py) restarts on, as a board resets on waking."""
    sleep_ms(ms)
    reset()
    raise SystemExit(75)


def reset():
    """machine.reset() of the host harness where there is one (the simulated board's);
    else nothing: the caller exits."""
    try:
        import machine
        machine.reset()  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        pass


def reset_cause():
    """"power" on the unix board (HEADRACE_RESET_CAUSE overrides it, for tests)."""
    return os.getenv("HEADRACE_RESET_CAUSE") or "power"


def unique_id():
    """8 bytes from the host's machine id (as machine.unique_id() on a board)."""
    raw = read_file("/etc/machine-id") or b""
    try:
        return bytes.fromhex(raw.strip()[:16].decode())
    except ValueError:
        return b"unix\x00\x00\x00\x00"


def network_up(ssid=None, password=None, timeout_ms=0):
    """The host's network is up."""
    return True


# -- the status LED -------------------------------------------------------------------------

def use_led(pin):
    """The status LED is on `pin` (the unix board's is simulated: nothing changes)."""


def show_code(pattern, forever=False):
    """A blink code on the status LED: `pattern` is (on ms, off ms) pairs (config.blink_pattern).
    The unix board writes it on stderr instead, once, and never blocks."""
    sys.stderr.write("led: %s\n" % " ".join("%d/%d" % p for p in pattern))


def identify(seconds):
    """Make the board findable (blink the LED for `seconds`) without blocking."""
    sys.stderr.write("led: identify %d s\n" % seconds)
