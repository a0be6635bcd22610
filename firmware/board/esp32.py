# ESP32 boards (DevKitC and the like): board/_mcu.py with the ESP32's defaults.
# Serial link on UART2 (TX GPIO17, RX GPIO16); status LED on GPIO2; ADC inputs with
# 11 dB attenuation (about 0-3.1 V); Wi-Fi for CoAP.
import machine

from board._mcu import (deepsleep, epoch_ms, i2c, lightsleep, network_up, onewire, pin_in, pin_out,  # noqa: F401
                        read_file, reset, reset_cause, sleep_ms, ticks_add, ticks_diff, ticks_ms, unique_id,
                        write_file_atomic)
from board import _mcu

NAME = "esp32"
WATCHDOG_MAX_MS = 0x7FFFFFFF
UART_DEFAULT = (2, 17, 16)  # id, tx, rx
LED_PIN = 2


def Serial(port):
    return _mcu.Uart(*_mcu.parse_port(port, *UART_DEFAULT))


def use_led(pin):
    global LED_PIN
    LED_PIN = pin


def Led(pin=None, active_low=False):
    return _mcu.Led(LED_PIN if pin is None else pin, active_low)


def Watchdog(timeout_ms):
    return _mcu.Watchdog(timeout_ms, WATCHDOG_MAX_MS)


def show_code(pattern, forever=False):
    _mcu.show_code(Led(), pattern, forever)


def identify(seconds):
    _mcu.Blinker(Led(), machine.Timer(0), seconds)


def adc(pin, atten=None):
    """ADC1 pins (GPIO32-39) work with Wi-Fi on; ADC2 pins do not."""
    a = machine.ADC(machine.Pin(pin))
    a.atten(machine.ADC.ATTN_11DB if atten is None else atten)
    return a
