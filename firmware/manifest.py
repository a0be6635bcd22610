# Deployment manifest (micropython-lib style) for freezing or mpy-cross.
module("cbor.py")
module("cose.py")
module("cose_whole.py")  # whole messages at once (reports, restored frames, tools): loaded at first use
module("hmac256.py")  # HMAC-SHA-256 in viper: native code (mpy-cross -march)
module("framing.py")
module("framing_whole.py")  # whole messages at once (tools, tests): loaded at first use
module("senml.py")
module("senml_whole.py")  # whole packs at once (reports, tools): loaded at first use
module("clock.py")
module("protocol.py")
module("outbox.py")
module("outbox_whole.py")  # the log read back at boot, tools: loaded when needed
module("config.py")
module("link_serial.py")
module("link_coap.py")
module("main.py")
# commands from the gateway: loaded by the node at the first ack that carries some
module("commands.py")
# a resource's simulated worker (bench, demos): accepts and finishes its dispatches
module("worker.py")
# node updates: the boot stage, the slots, and the release signature check (Ed25519 on SHA-512)
module("bootstage.py")
module("update.py")
module("fetch.py")
module("ed25519.py")
module("sha512.py")
# sensors/: __init__ (SensorError, build), sim, adc, ds18b20, bme280, adxl345; a node
# imports only the drivers its config names
package("sensors")
# board/: __init__ (picks the board by sys.platform), esp32 and rp2 (on _mcu), unix (with
# fake, the buses tests script)
package("board")
