# The Cortex-M3 bench board's own frozen modules, on top of asyncio and firmware/manifest.py
# (firmware/build/frozen.py includes all three).
module("_boot.py")
module("semihost.py")
