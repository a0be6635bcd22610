"""The node on the unix board, end to end on both interpreters: the simulated watchdog,
the sensors built from the config on fake buses, bad configs (error frame, blink code,
fallback), light and deep sleep. Frames are caught by a UDP socket standing in for the
gateway's CoAP port and checked with the gateway's own COSE code."""
import json
import socket
import subprocess
import sys
import textwrap
import threading

import cbor2
import pytest

from gateway.protocol import coap
from gateway.protocol.cose import parse_mac0
from gateway.protocol.numbers import CF_COSE_MAC0, COAP_ACK, COAP_CHANGED

from .conftest import FIRMWARE, ROOT

KEY = bytes(range(32))
MP = ROOT / "tests" / "firmware" / "mp"


def run(interpreter, code, tmp_path, timeout=60):
    script = tmp_path / "node_run.py"
    script.write_text(textwrap.dedent(f"""\
        import sys
        sys.path[:0] = [{str(FIRMWARE)!r}, {str(MP)!r}]
        """) + textwrap.dedent(code))
    return subprocess.run(interpreter + [str(script)], capture_output=True, text=True, timeout=timeout,
                          cwd=str(tmp_path))


def events(p):
    return [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]


@pytest.fixture
def gateway_port():
    """A UDP socket where the node's CoAP link sends (nobody answers: frames stay unacked)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10)
    yield s
    s.close()


@pytest.fixture
def acking_gateway():
    """A UDP socket that answers every CoAP POST with a piggybacked 2.04 carrying the ack."""
    from gateway.runtime.ingest import ack_message
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.1)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                data, addr = s.recvfrom(2048)
            except OSError:
                continue
            _type, _code, mid, token, _opts, payload = coap.parse(data)
            ack = ack_message(KEY, parse_mac0(payload).seq, 0)
            s.sendto(coap.response(COAP_ACK, COAP_CHANGED, mid, token, ack, CF_COSE_MAC0), addr)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield s
    stop.set()
    t.join(2)
    s.close()


def first_payload(sock):
    data, _ = sock.recvfrom(2048)
    m = parse_mac0(coap.parse(data)[5])
    return m.seq, cbor2.loads(m.verify(KEY))


def node_config(tmp_path, sock, **kw):
    cfg = {"node": "n1", "key": KEY.hex(), "transport": "coap", "coap_port": sock.getsockname()[1],
           "period_ms": 20, "batch": 4, "frames": 2, "drain_timeout_s": 1, "state_file": str(tmp_path / "seq"),
           "ack_timeout_ms": 5000, "watchdog_ms": 2000}
    cfg.update(kw)
    path = tmp_path / "node.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def test_watchdog_resets_a_node_that_stops_feeding_it(interpreter, tmp_path):
    p = run(interpreter, """\
        import board
        w = board.Watchdog(300)
        for _ in range(10):  # fed in time: 1 s in all, no reset
            board.sleep_ms(100)
            w.feed()
        print("fed")
        getattr(sys.stdout, "flush", lambda: None)()
        board.sleep_ms(3000)  # a hang
        print("survived")
        """, tmp_path)
    assert "fed" in p.stdout and "survived" not in p.stdout
    assert p.returncode in (-9, 137), (p.returncode, p.stderr)  # SIGKILL: as sudden as a reset
    assert "watchdog: not fed for 300 ms" in p.stderr


def test_a_fed_watchdog_lets_the_program_end(interpreter, tmp_path):
    p = run(interpreter, """\
        import board
        w = board.Watchdog(200)
        for _ in range(5):
            board.sleep_ms(50)
            w.feed()
        print("done")
        """, tmp_path)
    assert p.returncode == 0 and p.stdout.strip() == "done", p.stderr


def test_simulated_sensors_are_identical_on_both_interpreters(tmp_path):
    from .conftest import micropython
    out = []
    mp = micropython()
    if mp is None:
        pytest.skip("no micropython here")
    for cmd in ([mp, "-X", "heapsize=256k"], [sys.executable]):
        p = subprocess.run(cmd + [str(MP / "t_sim.py"), str(ROOT)], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        out.append(p.stdout.split()[-1])
    assert out[0] == out[1]


def test_sensors_from_the_config_on_the_boards_buses(interpreter, tmp_path, gateway_port):
    cfg = node_config(tmp_path, gateway_port, batch=8, frames=1, sensors=[
        {"name": "amb", "driver": "bme280", "i2c": 0, "addr": 0x76},
        {"name": "water", "driver": "ds18b20", "pin": 4, "resolution": 9},
        {"name": "vib", "driver": "adxl345", "samples": 64, "unit": "g", "axis": "x"},
        {"name": "p1", "driver": "adc", "pin": 26, "cal": [[0, 0], [65535, 10]], "period_ms": 40}])
    p = run(interpreter, f"""\
        import board, devices, main
        board.i2c(0).attach(0x76, devices.BME280Model())
        board.onewire(4).attach(devices.DS18B20Model(raw=0x0191))
        board.i2c(0).attach(0x53, devices.ADXL345Model(devices.sine(100, 100, 1600)))
        board.adc(26).value = 32768
        sys.exit(main.main(["main", {cfg!r}]))
        """, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    sent = [e for e in events(p) if e["ev"] == "sent"]
    readings = sent[0]["r"]
    names = [r[0] for r in readings]
    # the first round has every sensor, the ADC only every other round (its period is 2 x 20 ms);
    # on the wire, sensors read once come first, then a run per sensor read twice
    assert names == ["amb_h", "water", "vib", "p1", "amb_t", "amb_t", "amb_p", "amb_p"], names
    values = {r[0]: r[2] for r in readings}
    # BME280 temperature in 1/256 °C: 128422 / 5120 = 25.0824 °C, to 6421/256
    assert values["amb_t"] == 6421 / 256 and values["water"] == 25.0 and abs(values["p1"] - 5.0) < 0.001
    assert abs(values["vib"] - 100 * 0.0039 / 2 ** 0.5) < 0.01
    seq, records = first_payload(gateway_port)
    assert seq == 0 and records[0][0] == "amb_h" and records[0][-2] == "n1/"
    assert records[4][-2] == "n1/amb_t" and 0 not in records[4] and records[4][2] == 6421 / 256


def test_ds18b20_conversions_overlap_and_do_not_hold_the_loop(interpreter, tmp_path, gateway_port):
    # three DS18B20 at 12 bits (750 ms a conversion) on one bus: read one after another
    # they would hold the loop 2.25 s, past the 2 s watchdog; started together they take 0.75 s
    sensors = []
    for i in (1, 2, 3):
        sensors.append({"name": "t%d" % i, "driver": "ds18b20", "pin": 4, "resolution": 12,
                        "rom": "ROM%d" % i})
    cfg_sensors = json.dumps(sensors)
    p = run(interpreter, f"""\
        import json, board, devices, main
        log = []
        bus = board.onewire(4)
        sensors = json.loads({cfg_sensors!r})
        for i, s in enumerate(sensors):
            bus.attach(devices.DS18B20Model(serial=i + 1, raw=0x0191 + 16 * i, log=log))
            s["rom"] = "".join("%02x" % x for x in devices.rom_code(i + 1))
        cfg = json.load(open({node_config(tmp_path, gateway_port, batch=3, frames=2, watchdog_ms=2000)!r}))
        cfg["sensors"] = sensors
        json.dump(cfg, open("node2.json", "w"))
        rc = main.main(["main", "node2.json"])
        print("LOG", json.dumps(log))
        sys.exit(rc)
        """, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    sent = [e for e in events(p) if e["ev"] == "sent"]
    assert [[r[0] for r in e["r"]] for e in sent] == [["t1", "t2", "t3"]] * 2
    assert [r[2] for r in sent[0]["r"]] == [25.0625, 26.0625, 27.0625]
    log = json.loads(p.stdout.split("LOG ", 1)[1].splitlines()[0])
    # the set-up reads each scratchpad once; then each round converts all three, then reads them
    assert [e for _, e in log] == ["read"] * 3 + (["convert"] * 3 + ["read"] * 3) * 2, log


def test_a_long_vibration_window_does_not_hold_the_loop(interpreter, tmp_path, gateway_port):
    # 1024 samples at 400 Hz: a 2.56 s window, past the 2 s watchdog; the FIFO fills in
    # real time, and the node's loop runs (feeding the watchdog) while it does
    cfg = node_config(tmp_path, gateway_port, batch=1, frames=1, watchdog_ms=2000, sensors=[
        {"name": "vib", "driver": "adxl345", "samples": 1024, "rate_hz": 400, "unit": "g", "axis": "x"}])
    p = run(interpreter, f"""\
        import board, devices, main
        board.i2c(0).attach(0x53, devices.ADXL345Model(devices.sine(100, 50, 400), rate_hz=400))
        sys.exit(main.main(["main", {cfg!r}]))
        """, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    sent = [e for e in events(p) if e["ev"] == "sent"]
    assert len(sent) == 1 and abs(sent[0]["r"][0][2] - 100 * 0.0039 / 2 ** 0.5) < 0.01, sent


def test_a_bad_setting_falls_back_and_is_reported_in_an_error_frame(interpreter, tmp_path, gateway_port):
    cfg = node_config(tmp_path, gateway_port, batch=100, colour="red",
                      sensors=["temp", {"name": "water", "driver": "ds18b20"}])
    p = run(interpreter, f"""\
        import main
        sys.exit(main.main(["main", {cfg!r}]))
        """, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    evs = events(p)
    err = [e for e in evs if e["ev"] == "error"]
    assert len(err) == 1 and "'batch'" in err[0]["what"] and "'colour'" in err[0]["what"]
    assert "sensors[1].pin" in err[0]["what"]
    sent = [e for e in evs if e["ev"] == "sent"]
    assert len(sent) == 2 and all(len(e["r"]) == 8 for e in sent)  # batch fell back to 8
    assert "led: 1000/600 200/300 200/300 200/300 200/2000" in p.stderr  # code 4 once
    seq, records = first_payload(gateway_port)  # the error frame goes first
    assert seq == 0 and records[0][0] == "error" and "'batch'" in records[0][3], records
    assert records[0][-2] == "n1/"


def test_a_sensor_that_does_not_answer_is_left_out_and_reported(interpreter, tmp_path, gateway_port):
    cfg = node_config(tmp_path, gateway_port, frames=1, sensors=[
        "temp", {"name": "amb", "driver": "bme280", "i2c": 1}])
    p = run(interpreter, f"""\
        import main
        sys.exit(main.main(["main", {cfg!r}]))
        """, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    err = [e for e in events(p) if e["ev"] == "error"]
    assert len(err) == 1 and "sensor amb (bme280) did not start" in err[0]["what"], err
    assert "led: 1000/600 200/300 200/300 200/300 200/300 200/300 200/2000" in p.stderr  # code 6
    sent = [e for e in events(p) if e["ev"] == "sent"]
    assert {r[0] for r in sent[0]["r"]} == {"temp"}
    assert first_payload(gateway_port)[1][0][0] == "error"


@pytest.mark.parametrize("content, code", [(None, 1), ("{not json", 2), ({"node": "n1"}, 3)])
def test_a_node_without_identity_only_blinks(interpreter, tmp_path, content, code):
    path = tmp_path / "node.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    p = run(interpreter, f"""\
        import main
        sys.exit(main.main(["main", {str(path)!r}]))
        """, tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert [e["ev"] for e in events(p)] == ["error"]
    assert "led: 1000/600" + " 200/300" * (code - 1) + " 200/2000" in p.stderr


def test_light_sleep_between_samples_keeps_the_watchdog_fed(interpreter, tmp_path, acking_gateway):
    # 0.7 s periods in light sleep under a 1 s watchdog: slept in slices of at most half of it
    cfg = node_config(tmp_path, acking_gateway, sleep="light", period_ms=700, batch=1, frames=3,
                      watchdog_ms=1000)
    p = run(interpreter, f"""\
        import main, board
        n = []
        sleep = board.lightsleep
        def counted(ms):
            n.append(ms)
            sleep(ms)
        board.lightsleep = counted
        main.board.lightsleep = counted
        rc = main.main(["main", {cfg!r}])
        print("slept", max(n) if n else 0, len(n))
        sys.exit(rc)
        """, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    word, longest, count = p.stdout.split()[-3:]
    assert word == "slept" and 0 < int(longest) <= 500 and int(count) >= 2, p.stdout


def test_deep_sleep_ends_the_round_and_boots_again(interpreter, tmp_path, gateway_port):
    cfg = node_config(tmp_path, gateway_port, sleep="deep", period_ms=100, batch=8, frames=0,
                      sensors=["temp", "vib"])
    p = run(interpreter, f"""\
        import main
        sys.exit(main.main(["main", {cfg!r}]))
        """, tmp_path)
    assert p.returncode == 75, p.stdout + p.stderr  # the bench's board supervisor boots it again
    sent = [e for e in events(p) if e["ev"] == "sent"]
    assert len(sent) == 1 and [r[0] for r in sent[0]["r"]] == ["temp", "vib"]  # one round, flushed


def flaky(fail, cfg):
    """A node whose simulated sensors raise MemoryError on the reads numbered in `fail`."""
    return f"""\
    FAIL = {fail}
    CFG = {cfg!r}
    import main
    from sensors.sim import SimSensor
    calls = [0]
    real = SimSensor.read_raw

    def flaky(self):
        calls[0] += 1
        if calls[0] in FAIL:
            raise MemoryError("memory allocation failed, allocating 513 bytes")
        return real(self)

    SimSensor.read_raw = flaky
    sys.exit(main.main(["main", CFG]))
    """


def test_a_failing_task_is_counted_reported_and_run_again(interpreter, tmp_path, acking_gateway):
    cfg = node_config(tmp_path, acking_gateway, frames=4, batch=1, sensors=["temp"])
    p = run(interpreter, flaky("(2,)", cfg), tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    evs = events(p)
    errors = [e for e in evs if e["ev"] == "error"]
    assert len(errors) == 1 and errors[0]["what"].startswith("task sample: MemoryError"), errors
    done = [e for e in evs if e["ev"] == "done"][-1]
    assert done["faults"] == 1 and done["sent"] == 4 and done["acked"] >= 4, done
    told = [r for e in evs if e["ev"] == "sent" for r in e["r"] if r[0] == "fault"]
    assert len(told) == 1 and told[0][2].startswith("sample: MemoryError memory allocation failed"), told


def test_a_task_failing_again_and_again_resets_the_node_which_says_why_after_boot(interpreter, tmp_path,
                                                                                  acking_gateway):
    cfg = node_config(tmp_path, acking_gateway, frames=2, batch=1, sensors=["temp"])
    p = run(interpreter, flaky("range(1, 100)", cfg), tmp_path)
    assert p.returncode == 4, p.stdout + p.stderr  # the unix board has no reset: the process ends
    evs = events(p)
    assert [e["faults"] for e in evs if e["ev"] == "error"] == [1, 2, 3, 4, 5]
    assert [e for e in evs if e["ev"] == "reset"][0]["why"].startswith("sample: MemoryError")
    p = run(interpreter, flaky("()", cfg), tmp_path)  # boots again, sensors well
    assert p.returncode == 0, p.stdout + p.stderr
    evs = events(p)
    said = [e["what"] for e in evs if e["ev"] == "error"]
    assert len(said) == 1 and said[0].startswith("reset: sample: MemoryError"), said
    assert [e for e in evs if e["ev"] == "done"][-1]["faults"] == 0
    assert not (tmp_path / "seq.reset").exists()  # told once
