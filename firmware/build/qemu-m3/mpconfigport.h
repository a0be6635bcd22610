// The qemu port's configuration, with what the headrace node needs on top.
#include_next <mpconfigport.h>

// the port turns asyncio off unconditionally; the node's tasks need it
#undef MICROPY_PY_ASYNCIO
#define MICROPY_PY_ASYNCIO (1)

// LittleFS stamps files with the time; this board has no RTC in C (board/qemu.py keeps
// the wall clock in Python): the stamp is the time since boot
#define mp_hal_time_ns() ((uint64_t)mp_hal_ticks_ms() * 1000000ULL)
