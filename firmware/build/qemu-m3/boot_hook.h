// Included ahead of ports/qemu/main.c only (mpconfigboard.mk): main.c's mp_init() becomes
// mp_init() followed by the board's boot, frozen _boot.py (mounts LittleFS, see
// firmware/board/qemu.py), then /main.py when the REPL is the friendly one, as the esp32
// and rp2 ports do after every reset and soft reset.
#include "py/runtime.h"
#include "shared/runtime/pyexec.h"

static void headrace_mp_init(void) {
    mp_init();
    pyexec_frozen_module("_boot.py", false);
    if (pyexec_mode_kind == PYEXEC_MODE_FRIENDLY_REPL) {
        pyexec_file_if_exists("/main.py");  // "main.py" would find the frozen main module
    }
}

#define mp_init headrace_mp_init
