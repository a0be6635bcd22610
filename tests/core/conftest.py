"""One `impl` fixture for every core test: each test runs against every implementation of
the core module its test file names, the pure-Python reference always and the compiled
module when it is built.

A test file says which module it tests with a marker:

    pytestmark = pytest.mark.core("codec")

    def test_roundtrip(impl):          # runs twice: impl is core_ext._codec_py, then core_ext._codec
        impl.decode(impl.encode(...))

    def test_agree(impls):              # {"python": ..., "cython": ...}, for differential tests
        ...

When the build is required (`HEADRACE_BUILD_EXT=1` and not `HEADRACE_PURE=1`, as
`./run.sh test` sets), a compiled module that is missing is a collection error, never a
silent run of the reference alone.
"""
from __future__ import annotations

import os
from types import ModuleType

import pytest

from core_ext import implementations

NOT_BUILT = "compiled module not built (the reference alone is tested)"


def build_required() -> bool:
    return os.environ.get("HEADRACE_BUILD_EXT") == "1" and os.environ.get("HEADRACE_PURE") != "1"


def checked_implementations(name: str) -> dict[str, ModuleType]:
    """Every implementation of core_ext.<name> here; an error when the build is required but absent."""
    impls = implementations(name)
    if "cython" not in impls and build_required():
        raise pytest.UsageError(f"core_ext._{name} is not built but HEADRACE_BUILD_EXT=1: the Cython build failed "
                                "(rebuild with `pip install -e .` and read its errors)")
    return impls


def pytest_configure(config):
    config.addinivalue_line("markers", "core(name): the core_ext module a test file's `impl` fixture runs over")


def _core_name(node) -> str:
    marker = node.get_closest_marker("core")
    if marker is None or not marker.args:
        raise pytest.UsageError(f"{node.nodeid}: uses `impl` or `impls` but its file has no "
                                "`pytestmark = pytest.mark.core(\"<module>\")`")
    return marker.args[0]


def pytest_generate_tests(metafunc):
    if "impl" in metafunc.fixturenames:
        kinds = sorted(checked_implementations(_core_name(metafunc.definition)))
        metafunc.parametrize("impl", kinds, indirect=True)


@pytest.fixture
def impl(request) -> ModuleType:
    """The implementation of this file's core module under test (parametrised: python, cython)."""
    return checked_implementations(_core_name(request.node))[request.param]


@pytest.fixture(scope="module")
def impls(request) -> dict[str, ModuleType]:
    """Every implementation of this file's core module, by kind, for differential tests."""
    return checked_implementations(_core_name(request.node))


@pytest.fixture(scope="module")
def compiled(impls) -> ModuleType:
    """The compiled module, for tests that compare it with the reference; skips when it is not built."""
    if "cython" not in impls:
        pytest.skip(NOT_BUILT)
    return impls["cython"]
