"""Build the Cython core (core_ext). Metadata lives in pyproject.toml.

HEADRACE_BUILD_EXT=1 makes a failed or skipped extension build an error
(CI sets it, so the pure-Python references can never be tested by accident
in place of the compiled modules). Otherwise a failed build falls back to the
pure-Python references with a warning.
"""
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

REQUIRED = os.environ.get("HEADRACE_BUILD_EXT") == "1"

# One entry per accelerated module: core_ext/_<name>.pyx, reference core_ext/_<name>_py.py
MODULES = ["aggregate", "ingest", "match", "rules", "codec", "udp", "verify", "coap"]


def extensions():
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRED:
            raise
        print("headrace: Cython not available, using the pure-Python core", file=sys.stderr)
        return []
    exts = [
        Extension(f"core_ext._{name}", [f"core_ext/_{name}.pyx"], extra_compile_args=["-O3"])
        for name in MODULES
    ]
    return cythonize(exts, language_level=3, compiler_directives={"embedsignature": True})


class OptionalBuildExt(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as exc:  # compiler missing or broken
            if REQUIRED:
                raise
            print(f"headrace: building core_ext failed ({exc}); using the pure-Python core", file=sys.stderr)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            if REQUIRED:
                raise
            print(f"headrace: building {ext.name} failed ({exc}); using the pure-Python core", file=sys.stderr)


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
