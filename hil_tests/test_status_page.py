"""The status page in a real browser: Debian's chromium driven by Playwright, against the real
gateway process with a MicroPython node on a serial pty, frames over CoAP and mosquitto.

A new frame, an alarm and a dispatch step must show on the page within 2 s of happening;
the page must say when it loses the gateway and come back when the gateway does. The
screenshots land in the test's temporary folder (status-page*.png), named in the output.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import cbor2
import pytest
from aiocoap.numbers.codes import Code

from gateway.protocol import cose

from .rig import GatewayProcess, Node, coap_post, wait_for

pytestmark = pytest.mark.hil

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage",
        "--disable-extensions", "--no-first-run"]
TOKEN = "page-test-token-0123456789"
LAG = 2.0  # seconds from happening to showing on the page

PLANT = f"""token = "{TOKEN}"

[[rules]]
name = "probe-hot"
series = "probe/temp"
above = 80
severity = "critical"

[[resources]]
id = "mech1"
capabilities = ["mechanic"]
home = [2.0, 2.0]
speed = 1.5

[zones]
points = {{ workshop = [2, 2], hall = [20, 2], pumps = [20, 12] }}
edges = [["workshop", "hall"], ["hall", "pumps"]]
"""


class GuardedGateway(GatewayProcess):
    """The rig's gateway process, its status API asked with the [http] token."""

    def _get(self, path: str, body: bytes | None = None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body,
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return self._get("/health")["ok"]
        except OSError:
            return False


def frame(key: bytes, seq: int, **readings) -> bytes:
    items = list(readings.items())
    recs = [{-2: "probe/", -3: time.time(), 0: items[0][0], 2: float(items[0][1])}]
    recs += [{0: k, 2: float(v)} for k, v in items[1:]]
    return cose.mac0(key, b"probe", cbor2.dumps(recs), seq=seq)


@pytest.fixture
def browser():
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    if not os.path.exists(CHROMIUM):
        pytest.skip("no chromium: apt-get install chromium (./run.sh test installs it)")
    with playwright.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def coap_send(port: int, payload: bytes):
    """coap_post on a thread of its own: Playwright's sync API keeps an event loop in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(coap_post, port, payload).result(60)


def shown_lag(page, selector: str, since: float) -> float:
    """Seconds between `since` (our clock) and when the page showed the element (its data-shown)."""
    return int(page.get_attribute(selector, "data-shown")) / 1000 - since


def test_frames_alarms_and_dispatch_steps_show_within_2_s(tmp_path, mosquitto, pty_pairs, browser):
    keys = {"pump1": os.urandom(32), "probe": os.urandom(32)}
    pair = pty_pairs("pump1")
    gw = GuardedGateway(tmp_path, mosquitto.port, keys, serial_ports=[pair.a], extra=PLANT).start()
    node = page = None
    try:
        node = Node(tmp_path, {"node": "pump1", "key": keys["pump1"].hex(), "transport": "serial",
                               "port": pair.b, "sensors": ["temp", "vib"], "period_ms": 250, "batch": 2,
                               "seed": 7, "state_file": str(tmp_path / "pump1.seq"), "ack_timeout_ms": 500})
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        base = f"http://127.0.0.1:{gw.http_port}"
        assert page.goto(base + "/").status == 401  # no token, no page
        page.goto(f"{base}/?token={TOKEN}")  # once: the cookie keeps it
        assert page.url == base + "/"
        page.wait_for_function("window.headrace && window.headrace.updates > 0", timeout=10000)

        # a frame from the MicroPython node: each new one shows within 2 s of its commit
        page.wait_for_selector('tr[data-node="pump1"][data-shown-at]', timeout=20000)
        lags = []
        for _ in range(3):
            before = page.get_attribute('tr[data-node="pump1"]', "data-last-seen")
            page.wait_for_function(f"""document.querySelector('tr[data-node="pump1"]').dataset.lastSeen
                                       !== "{before}" """, timeout=5000)
            tr = page.query_selector('tr[data-node="pump1"]')
            lags.append(int(tr.get_attribute("data-shown-at")) / 1000 - float(tr.get_attribute("data-last-seen")))
        assert max(lags) < LAG, lags
        # a frame sent now over CoAP: its node's row appears within 2 s
        sent = time.time()
        assert coap_send(gw.coap_port, frame(keys["probe"], 1, temp=21.5, battery=88)).code == Code.CHANGED
        page.wait_for_selector('tr[data-node="probe"] span[data-s="temp"]:text("21.5")', timeout=LAG * 1000)
        assert page.text_content('tr[data-node="probe"] td:nth-child(8)') == "88"  # battery

        # an alarm: raised by the next frame, shown at once
        sent = time.time()
        assert coap_send(gw.coap_port, frame(keys["probe"], 2, temp=93.0, battery=88)).code == Code.CHANGED
        page.wait_for_selector('#events li[data-type="alarm"][data-state="raised"]', timeout=LAG * 1000)
        assert shown_lag(page, '#events li[data-type="alarm"]', sent) < LAG
        page.wait_for_selector('#alarms li[data-rule="probe-hot"]', timeout=LAG * 1000)
        assert "probe/temp = 93" in page.text_content('#alarms li[data-rule="probe-hot"]')

        # a dispatch step: a demand over the API, assigned by the next round
        sent = time.time()
        demand = gw._get("/demands", json.dumps({"need": "mechanic", "zone": "pumps", "priority": 8}).encode())
        page.wait_for_selector('#events li[data-type="dispatch"][data-state="assigned"]', timeout=LAG * 1000)
        assert shown_lag(page, '#events li[data-type="dispatch"]', sent) < LAG
        assert "mech1: assigned" in page.text_content('#events li[data-type="dispatch"]')
        page.wait_for_selector(f'#map [data-demand="{demand["id"]}"]', timeout=LAG * 1000)
        assert page.is_visible('#map [data-res="mech1"].busy')

        # a node's plot (uPlot), then the whole page
        page.click('tr[data-node="pump1"] td:first-child')
        page.wait_for_selector("#plot .uplot canvas", timeout=10000)
        shot = tmp_path / "status-page.png"
        page.screenshot(path=str(shot), full_page=True)

        # the gateway goes: the page says so; it comes back: the page reconnects by itself
        assert page.is_hidden("#lost")
        gw.stop()
        page.wait_for_selector("#lost", state="visible", timeout=5000)
        assert "lost" in page.text_content("#lost")
        page.screenshot(path=str(tmp_path / "status-page-lost.png"))
        updates = page.evaluate("window.headrace.updates")
        gw.restart()
        page.wait_for_selector("#lost", state="hidden", timeout=15000)
        page.wait_for_function(f"window.headrace.updates > {updates}", timeout=5000)
        page.wait_for_selector('tr[data-node="pump1"]', timeout=10000)  # the node talks to the new process
        page.screenshot(path=str(tmp_path / "status-page-reconnected.png"))
        assert not errors, errors
        print(f"screenshots: {shot}, status-page-lost.png, status-page-reconnected.png in {tmp_path}; "
              f"frame lags {['%.2f' % x for x in lags]} s")
    except BaseException:
        if page is not None:  # what the page showed when it went wrong
            page.screenshot(path=str(tmp_path / "status-page-failure.png"), full_page=True)
            print(f"page at the failure: {tmp_path / 'status-page-failure.png'}; gateway log:\n{gw.log()[-3000:]}")
        raise
    finally:
        if node is not None:
            node.kill()
        gw.stop()
