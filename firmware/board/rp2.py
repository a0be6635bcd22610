# RP2040 / RP2350 boards (Raspberry Pi Pico, Pico W, Pico 2): board/_mcu.py with their
# defaults. Serial link on UART0 (TX GP0, RX GP1); status LED "LED" (GP25, or the
# CYW43's on a Pico W); ADC on GP26-GP28; the watchdog takes at most 8388 ms; Wi-Fi on
# the W boards only.
import machine

from board._mcu import (deepsleep, epoch_ms, i2c, lightsleep, network_up, onewire, pin_in, pin_out,  # noqa: F401
                        read_file, reset, reset_cause, sleep_ms, ticks_add, ticks_diff, ticks_ms, unique_id,
                        write_file_atomic)
import board._mcu as _mcu

NAME = "rp2"
WATCHDOG_MAX_MS = 8388  # the RP2040's 24-bit counter at 2 ticks per microsecond
UART_DEFAULT = (0, 0, 1)  # id, tx, rx
LED_PIN = "LED"
TIMER_ID = -1  # the machine.Timer identify blinks with


Serial, use_led, Led, Watchdog, show_code, identify = _mcu.Port(WATCHDOG_MAX_MS, UART_DEFAULT, LED_PIN,
                                                                TIMER_ID).functions()


def adc(pin, atten=None):
    """GP26-GP28 (ADC0-2), 0-3.3 V; `atten` is for the ESP32 and ignored here."""
    return machine.ADC(machine.Pin(pin))
