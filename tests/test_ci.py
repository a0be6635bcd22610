"""The CI script's fresh-clone run (`.ci/run`, 2/2) leaves out the bench tests marked `long`
(`-m "not long"`): they ran on the same commit in 1/2, with ../shared beside the clone. That is
only sound for tests that cannot depend on ../shared: a `long` test must not use the frozen
firmware images, the Cortex-M3 board or anything else read from ../shared, or a clone alone
would meet a failure CI never ran."""
import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# what reaches ../shared from a test: the frozen builds and the QEMU board (firmware/build/frozen.py),
# the real sensor series, the peers' harnesses
SHARED = re.compile(r"shared|frozen|qemu|MICROPY_DIR|micropython-1\.|peers", re.I)


def _long_tests():
    for path in sorted((REPO / "hil_tests").glob("test_*.py")) + sorted((REPO / "tests").rglob("test_*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                    ast.unparse(d) == "pytest.mark.long" for d in node.decorator_list):
                yield path, node


def test_long_tests_exist_and_reach_nothing_in_shared():
    found = list(_long_tests())
    assert found, "no test is marked long: .ci/run's fresh-clone run leaves nothing out, drop its -m"
    for path, fn in found:
        assert not path.is_relative_to(REPO / "tests"), f"{path.name}::{fn.name}: only bench tests are marked long"
        module = path.read_text()
        hit = SHARED.search(module)
        assert hit is None, (f"{path.name}::{fn.name} is marked long but its module mentions {hit.group()!r}: "
                             "a test that may need ../shared must run in the fresh clone too")


def test_ci_runs_the_long_tests_once():
    ci = (REPO / ".ci" / "run").read_text()
    assert '-m "not release"' in ci and '-m "not long"' in ci, "1/2 runs the long tests, 2/2 leaves them out"
