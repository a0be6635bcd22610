"""headrace's accelerated core: each module a Cython implementation and a pure-Python
reference with the same API. The reference is the specification.

`core_ext.<name>` picks the compiled `_<name>` unless `HEADRACE_PURE=1` or it is
not built; `HEADRACE_REQUIRE_EXT=1` turns a missing compiled module into an
ImportError (CI sets it, so the references are never tested by accident in
place of the compiled modules).
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType


def load(name: str) -> tuple[ModuleType, str]:
    """Return (module, "cython" | "python") for core_ext._<name>."""
    pure = os.environ.get("HEADRACE_PURE") == "1"
    if not pure:
        try:
            return importlib.import_module(f"core_ext._{name}"), "cython"
        except ImportError as exc:
            if os.environ.get("HEADRACE_REQUIRE_EXT") == "1":
                raise ImportError(f"core_ext._{name} is not built ({exc}); build it with "
                                  "`pip install -e .` (needs Cython and a C compiler), or set HEADRACE_PURE=1 "
                                  "to run the pure-Python reference") from exc
    return importlib.import_module(f"core_ext._{name}_py"), "python"


def implementations(name: str) -> dict[str, ModuleType]:
    """Every implementation of a module that is available here, for differential tests."""
    out = {"python": importlib.import_module(f"core_ext._{name}_py")}
    try:
        out["cython"] = importlib.import_module(f"core_ext._{name}")
    except ImportError:
        pass
    return out
