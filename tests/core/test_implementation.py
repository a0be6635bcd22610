"""CI must test the compiled core, never the reference by accident (and the reverse under HEADRACE_PURE)."""
import importlib
import os

import pytest

import core_ext.aggregate as aggregate


@pytest.mark.skipif(os.environ.get("HEADRACE_BUILD_EXT") != "1" or os.environ.get("HEADRACE_PURE") == "1",
                    reason="only when the build is required (HEADRACE_BUILD_EXT=1)")
def test_compiled_module_in_use():
    assert aggregate.IMPLEMENTATION == "cython"
    assert aggregate.Aggregator.__module__ == "core_ext._aggregate"
    assert importlib.import_module("core_ext._aggregate").__file__.endswith((".so", ".pyd"))


@pytest.mark.skipif(os.environ.get("HEADRACE_PURE") != "1", reason="only under HEADRACE_PURE=1")
def test_reference_forced():
    assert aggregate.IMPLEMENTATION == "python"
    assert aggregate.Aggregator.__module__ == "core_ext._aggregate_py"


def test_pure_switch_in_a_fresh_interpreter():
    import subprocess
    import sys
    code = "import core_ext.aggregate as a; print(a.IMPLEMENTATION)"
    env = {**os.environ, "HEADRACE_PURE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "python"
