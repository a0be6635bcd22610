import subprocess

import pytest

from .conftest import ROOT, micropython

SCRIPTS = ["t_cbor", "t_framing", "t_golden", "t_hmac", "t_outbox", "t_config", "t_board", "t_mcu", "t_sim", "t_adc",
           "t_ds18b20", "t_bme280", "t_adxl345", "t_worker"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script(interpreter, script, tmp_path):
    p = subprocess.run(interpreter + [str(ROOT / "tests" / "firmware" / "mp" / f"{script}.py"), str(ROOT),
                                      str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip().splitlines()[-1].startswith(f"OK {script}"), p.stdout


def _releases(folder):
    """The releases t_update.py installs, made and signed by gateway/tools/release.py."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from gateway.tools import release

    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    (folder / "release.pub").write_text(release.public_bytes(key).hex())
    blob = bytes(range(256)) * 2

    def app(version, body=None):
        return {"app.py": (body or f"VERSION = {version!r}\n").encode(), "data/blob.bin": blob}

    cases = {
        "good": (key, "1.1.0", app("1.1.0")),
        "good2": (key, "1.2.0", app("1.2.0")),
        "forged": (other, "1.1.0", app("1.1.0")),
        "downgrade": (key, "0.9.0", {"app.py": b"VERSION = '0.9.0'\n"}),
        "same": (key, "1.0.0", app("1.0.0")),
        "crash": (key, "1.3.0", app("1.3.0", "raise ValueError('crashes at boot')\n")),
        "badhash": (key, "1.1.0", app("1.1.0")),
    }
    for name, (signer, version, parts) in cases.items():
        manifest, bodies = release.split(release.make(signer, release.parse_version(version), "mpy6", parts))
        body = b"".join(bodies)
        if name == "badhash":
            body = body[:5] + bytes([body[5] ^ 1]) + body[6:]
        (folder / f"{name}.man").write_bytes(manifest)
        (folder / f"{name}.bin").write_bytes(body)


def test_update(interpreter, tmp_path):
    """firmware/update.py: t_update.py with releases signed by `headrace release`'s code."""
    rel = tmp_path / "releases"
    rel.mkdir()
    _releases(rel)
    work = tmp_path / "node"
    work.mkdir()
    p = subprocess.run(interpreter + [str(ROOT / "tests" / "firmware" / "mp" / "t_update.py"), str(ROOT),
                                      str(work), str(rel)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip().splitlines()[-1].startswith("OK t_update"), p.stdout


FITTING = """
import gc, sys
sys.path.insert(0, sys.argv[1])
import fetch
gc.collect()
roomy = fetch._fitting(512)
ballast = []
while gc.mem_free() > 3000:
    ballast.append(bytearray(256))
tight = fetch._fitting(512)
print(roomy, tight)
"""


def test_a_tight_heap_asks_for_smaller_update_blocks(tmp_path):
    """fetch._fitting on the MicroPython unix port: the offered block size with room to spare,
    a smaller one (64 to 256 B) with about 3 KB free."""
    mp = micropython()
    if mp is None:
        pytest.skip("HEADRACE_NO_MICROPYTHON=1: MicroPython runs skipped on this machine")
    script = tmp_path / "fitting.py"
    script.write_text(FITTING)
    p = subprocess.run([mp, "-X", "heapsize=128k", str(script), str(ROOT / "firmware")], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    roomy, tight = map(int, p.stdout.split())
    assert roomy == 512 and 64 <= tight <= 256, (roomy, tight)
