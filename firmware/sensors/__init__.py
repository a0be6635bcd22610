# Sensor drivers. Each has .name (its SenML name), .every (it is read on every n-th period
# of the node) and .read() -> float, which raises SensorError, or OSError from its bus,
# when it has no valid value. Drivers take their bus from the board layer and keep their
# buffers from one read to the next (readinto), so a read allocates little. The node reads
# .read_raw() -> int instead where a driver has it: the value in quanta of 2**-.shift of
# its unit (read() / 2**-shift), no float made, packed exactly (senml.Pack.add_raw).
#
#   sim.py      simulated sensors: seeded drift, noise, steps, spikes and a slow cycle
#   adc.py      an analog input, oversampled, with a two-point calibration
#   ds18b20.py  DS18B20 temperature over 1-Wire, scratchpad CRC-checked
#   bme280.py   BME280 temperature, pressure and humidity over I2C (Bosch's integer formulas)
#   adxl345.py  vibration RMS (mm/s or g) over a window of ADXL345 samples over I2C
#   schema.py   what each driver's entry in the node's config takes (config.py uses it)


class SensorError(Exception):
    """A sensor gave no valid value: no answer, a wrong chip id, a bad CRC."""


def raise_kept(sensor):
    """Raise, once, the error a sensor's start() or fill() kept for the read() after it."""
    fault = sensor.fault
    if fault is not None:
        sensor.fault = None
        raise fault


def build(specs, seed, board):
    """The sensors of a validated config's `sensors` (config.py: kind names of simulated
    sensors, or entries completed by sensors/schema.py), on `board`'s buses.
    Returns (sensors, problems): a sensor that fails to start is left out and reported."""
    out = []
    problems = []
    for i, spec in enumerate(specs):
        if isinstance(spec, str):  # a simulated sensor named by its kind
            from sensors.sim import SimSensor
            out.append(SimSensor(spec, seed * 131 + i))
            continue
        try:
            made = _make(spec, seed * 131 + i, board)
        except (SensorError, OSError, ValueError) as e:
            problems.append("sensor %s (%s) did not start: %s" % (spec["name"], spec["driver"], e))
            continue
        for s in made:
            s.every = spec["every"]
            out.append(s)
    return out, problems


def _make(spec, seed, board):
    drv = spec["driver"]
    name = spec["name"]
    if drv == "sim":
        from sensors.sim import SimSensor
        return [SimSensor(spec["kind"], seed if spec["seed"] is None else spec["seed"], name, spec["base"],
                          spec["noise"])]
    if drv == "adc":
        from sensors.adc import AdcSensor
        return [AdcSensor(board.adc(spec["pin"]), name, spec["cal"], spec["samples"])]
    if drv == "ds18b20":
        from sensors.ds18b20 import DS18B20
        return [DS18B20(board.onewire(spec["pin"]), name, board, spec["rom"], spec["resolution"])]
    bus = board.i2c(spec["i2c"], spec["scl"], spec["sda"], spec["freq"])
    if drv == "bme280":
        from sensors.bme280 import BME280
        return BME280(bus, spec["addr"], board).channels(name, spec["measure"])
    if drv == "adxl345":
        from sensors.adxl345 import Vibration
        return [Vibration(bus, name, board, spec["addr"], spec["rate_hz"], spec["samples"], spec["range_g"],
                          spec["unit"], spec["axis"])]
    raise ValueError("unknown driver %r" % drv)
