"""CI must test the compiled core, never the reference by accident (and the reverse under
HEADRACE_PURE): every extension module setup.py builds is checked, so a module added there
is covered here without a new test."""
import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core_ext import load

ROOT = Path(__file__).resolve().parents[2]


def extension_modules() -> list[str]:
    """setup.py's MODULES list, read without running setup()."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MODULES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no MODULES list")


MODULES = extension_modules()
COMPILED_REQUIRED = os.environ.get("HEADRACE_BUILD_EXT") == "1" and os.environ.get("HEADRACE_PURE") != "1"


def facade(name: str):
    """core_ext.<name>, the module the gateway imports, when there is one (a module only
    other Cython modules use has none)."""
    if not (ROOT / "core_ext" / f"{name}.py").exists():
        return None
    return importlib.import_module(f"core_ext.{name}")


def test_every_cython_source_is_built_by_setup():
    sources = sorted(p.stem[1:] for p in (ROOT / "core_ext").glob("_*.pyx"))
    assert sorted(MODULES) == sources, "setup.py's MODULES and core_ext/_*.pyx differ"


@pytest.mark.parametrize("name", MODULES)
def test_every_module_has_its_pure_reference(name):
    assert importlib.import_module(f"core_ext._{name}_py")


@pytest.mark.skipif(not COMPILED_REQUIRED, reason="only when the build is required (HEADRACE_BUILD_EXT=1)")
@pytest.mark.parametrize("name", MODULES)
def test_compiled_module_in_use(name):
    compiled = importlib.import_module(f"core_ext._{name}")
    assert compiled.__file__.endswith((".so", ".pyd")), compiled.__file__
    assert load(name) == (compiled, "cython")
    public = facade(name)
    if public is None:
        return
    assert public.IMPLEMENTATION == "cython"
    assert public._impl is compiled
    exported = [n for n in public.__all__ if n != "IMPLEMENTATION" and hasattr(compiled, n)]
    assert exported, f"core_ext.{name} exports nothing of the compiled module"
    for attr in exported:  # what the gateway calls is the compiled object, not the reference's
        assert getattr(public, attr) is getattr(compiled, attr), attr


@pytest.mark.skipif(os.environ.get("HEADRACE_PURE") != "1", reason="only under HEADRACE_PURE=1")
@pytest.mark.parametrize("name", MODULES)
def test_reference_forced(name):
    reference = importlib.import_module(f"core_ext._{name}_py")
    assert load(name) == (reference, "python")
    public = facade(name)
    if public is not None:
        assert public.IMPLEMENTATION == "python" and public._impl is reference


def test_pure_switch_in_a_fresh_interpreter():
    code = ("import importlib, sys\n"
            "for name in sys.argv[1:]:\n"
            "    m = importlib.import_module('core_ext.' + name)\n"
            "    print(name, m.IMPLEMENTATION)\n")
    names = [n for n in MODULES if facade(n) is not None]
    env = {**os.environ, "HEADRACE_PURE": "1"}
    out = subprocess.run([sys.executable, "-c", code, *names], env=env, capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert out.split("\n")[:-1] == [f"{n} python" for n in names]
