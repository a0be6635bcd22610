# headrace's Cortex-M3 bench board: MicroPython's ports/qemu MPS2_AN385 board (QEMU
# `-machine mps2-an385`) with asyncio, LittleFS and a boot that runs /main.py, built by
# firmware/build/frozen.py as `make -C ports/qemu BOARD=MPS2_AN385 BOARD_DIR=<this folder>`.
QEMU_ARCH = arm
QEMU_MACHINE = mps2-an385

CFLAGS += -mthumb -mcpu=cortex-m3 -mfloat-abi=soft
CFLAGS += -DQEMU_SOC_MPS2
CFLAGS += -DMICROPY_HW_MCU_NAME='"Cortex-M3"'
# this folder's mpconfigport.h wraps the port's: ahead of -I. on the include path
CFLAGS += -I$(BOARD_DIR)

LDSCRIPT = mcu/arm/mps2.ld

SRC_BOARD_O = shared/runtime/gchelper_native.o shared/runtime/gchelper_thumb2.o

MPY_CROSS_FLAGS += -march=armv7m

# LittleFS v2 (vfs.VfsLfs2) for the node's files, on a block device the board layer gives
MICROPY_VFS_LFS2 = 1

# the port's main.c runs only the REPL: boot_hook.h makes its mp_init() also run the frozen
# _boot.py (mounts the filesystem) and then /main.py, as the esp32 and rp2 ports' main.c do
$(BUILD)/main.o: CFLAGS += -include $(BOARD_DIR)/boot_hook.h
