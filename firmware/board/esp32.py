# ESP32 boards (DevKitC and the like): board/_mcu.py with the ESP32's defaults.
# Serial link on UART2 (TX GPIO17, RX GPIO16); status LED on GPIO2; ADC inputs with
# 11 dB attenuation (about 0-3.1 V); Wi-Fi for CoAP.
import machine

from board._mcu import (deepsleep, epoch_ms, i2c, lightsleep, network_up, onewire, pin_in, pin_out,  # noqa: F401
                        read_file, reset, reset_cause, sleep_ms, ticks_add, ticks_diff, ticks_ms, unique_id,
                        write_file_atomic)
import board._mcu as _mcu

NAME = "esp32"
WATCHDOG_MAX_MS = 0x7FFFFFFF
UART_DEFAULT = (2, 17, 16)  # id, tx, rx
LED_PIN = 2
TIMER_ID = 0  # the machine.Timer identify blinks with


Serial, use_led, Led, Watchdog, show_code, identify = _mcu.Port(WATCHDOG_MAX_MS, UART_DEFAULT, LED_PIN,
                                                                TIMER_ID).functions()


def adc(pin, atten=None):
    """ADC1 pins (GPIO32-39) work with Wi-Fi on; ADC2 pins do not."""
    a = machine.ADC(machine.Pin(pin))
    a.atten(machine.ADC.ATTN_11DB if atten is None else atten)
    return a
