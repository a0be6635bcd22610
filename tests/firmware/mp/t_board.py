# The board interface: every board module (unix here; esp32 and rp2 in t_mcu.py) has
# every name board/__init__.py documents; the unix board's simulated parts behave.
# MicroPython and CPython.
import sys

ROOT = sys.argv[1]
sys.path.insert(0, ROOT + "/firmware")
import board  # noqa: E402

INTERFACE = ["NAME", "WATCHDOG_MAX_MS", "ticks_ms", "ticks_diff", "ticks_add", "epoch_ms", "sleep_ms", "lightsleep",
             "deepsleep", "reset", "reset_cause", "unique_id", "network_up", "Watchdog", "Led", "use_led", "show_code",
             "identify", "Serial", "i2c", "onewire", "adc", "pin_out", "pin_in", "read_file", "write_file_atomic"]
missing = [n for n in INTERFACE if not hasattr(board, n)]
assert not missing, missing
assert board.NAME == "unix"

t0 = board.ticks_ms()
board.lightsleep(30)
assert 25 <= board.ticks_diff(board.ticks_ms(), t0) < 1000
assert board.epoch_ms() > 1700000000000
uid = board.unique_id()
assert isinstance(uid, bytes) and len(uid) == 8
assert board.reset_cause() in ("power", "watchdog", "deepsleep", "soft", "hard")
assert board.network_up("plant", "secret") is True

led = board.Led()
led.on()
assert led.value() == 1
led.off()
assert led.value() == 0 and [s for s, _ in led.trace] == [1, 0]

# the same bus object for the same id: tests attach devices, drivers find them
assert board.i2c(0) is board.i2c(0, 22, 21, 100000) and board.i2c(1) is not board.i2c(0)
assert board.onewire(4) is board.onewire(4)
board.adc(26).value = 1234
assert board.adc(26).read_u16() == 1234
p = board.pin_out(5, 1)
assert board.pin_out(5).value() == 0  # pin_out drives the level given (0 by default)
assert board.pin_in(7, pull_up=True).value() == 1
print("OK t_board")
