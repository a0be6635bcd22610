"""`impl` runs each core test against every implementation: the pure-Python reference
always, the compiled module when built (and CI requires it to be built)."""
import os

import pytest

from core_ext import implementations


def _params(name):
    impls = implementations(name)
    if "cython" not in impls and os.environ.get("HEADRACE_BUILD_EXT") == "1" and os.environ.get("HEADRACE_PURE") != "1":
        raise RuntimeError(f"core_ext._{name} is not built but HEADRACE_BUILD_EXT=1: the build failed")
    return impls


@pytest.fixture(params=sorted(_params("aggregate")))
def agg_impl(request):
    return implementations("aggregate")[request.param]
