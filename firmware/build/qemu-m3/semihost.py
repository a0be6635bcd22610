# ARM semihosting from Python on the Cortex-M3 bench board (QEMU `-semihosting`): the
# board's storage and clock are host files that outlive the emulated board. Frozen into
# the qemu image only (inline Thumb assembler: mpy-cross -march=armv7m).
#
#   call(op, params) -> r0      op: a SYS_* operation number; params: an array('I') parameter block
#
# The call allocates nothing: small ints in, a small int out (addresses on this board are
# below 4 MB).
# The operation numbers (SYS_OPEN 0x01, SYS_CLOSE 0x02, SYS_WRITE 0x05, SYS_READ 0x06,
# SYS_SEEK 0x0A) and fopen modes by index ("r" "rb" "r+" "r+b" "w" "wb" "w+" "w+b" ...)
# are board/qemu.py's constants (const(): in the code, not names in a module's dict of heap).
import micropython


@micropython.asm_thumb
def _bkpt(r0, r1):
    data(2, 0xBEAB)  # bkpt 0xAB: the semihosting trap; r0 op, r1 parameter block, result in r0


def call(op, params):
    return _bkpt(op, params)
