# Run by the image's boot (boot_hook.h) after every reset: the board's filesystem.
import board

board.mount()
