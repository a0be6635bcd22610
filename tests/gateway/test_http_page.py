"""The status page and its event stream, on a real gateway in this process (a spool in a temp
folder, frames offered as a transport offers them); what the page shows, and the stream's
`state` and `ev` messages. The browser's side is hil_tests/test_status_page.py."""
from __future__ import annotations

import asyncio
import json
import logging
import time

from hypothesis import given
from hypothesis import strategies as st

from gateway import config
from gateway.runtime.http import StatusServer


async def _get(port, path, headers=None):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(f"GET {path} HTTP/1.0\r\n{head}\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head.decode(), body


async def _events(reader, want: int, timeout: float = 10):
    """The next `want` Server-Sent Events as (kind, object)."""
    out = []
    while len(out) < want:
        block = await asyncio.wait_for(reader.readuntil(b"\n\n"), timeout)
        fields = dict(line.split(": ", 1) for line in block.decode().strip().splitlines() if ": " in line)
        if "event" in fields:
            out.append((fields["event"], json.loads(fields["data"])))
    return out


def test_page_shows_nodes_uplink_alarms_and_the_map(small_plant_gateway, frame_sender):
    async def main():
        gw, keys = small_plant_gateway(["pump1", "pump2"])
        async with gw:
            server = StatusServer(config.HttpSection(port=0), gw)
            server.page.history.period = 0.05
            await server.start()
            try:
                p1, p2 = frame_sender(gw, "pump1", keys["pump1"]), frame_sender(gw, "pump2", keys["pump2"])
                await asyncio.wait_for(asyncio.gather(p1.send(temp=41.5, battery=87), p2.send(pressure=2.25)), 10)
                await asyncio.wait_for(p1.send(temp=90.0, battery=86), 10)  # raises pump1-hot
                code, head, body = await _get(server.port, "/")
                html = body.decode()
                assert code == 200 and "text/html" in head
                assert '<tr data-node="pump1"' in html and '<tr data-node="pump2"' in html
                assert '<span data-s="temp">90</span>' in html and '<span data-s="pressure">2.25</span>' in html  # the latest readings
                assert "DISCONNECTED" in html  # no broker on that port
                initial = json.loads(html.split('id="initial">', 1)[1].split("</script>", 1)[0])
                assert [a["rule"] for a in initial["alarms"]] == ["pump1-hot"]
                assert initial["alarms"][0]["severity"] == "critical" and initial["alarms"][0]["value"] == 90
                assert initial["dispatch"]["points"] == {"hall": [0.0, 0.0], "pumps": [20.0, 10.0]}
                assert [r["id"] for r in initial["dispatch"]["resources"]] == ["mech1"]
                raised = [e for e in initial["events"] if e["type"] == "alarm" and e["state"] == "raised"]
                assert raised and raised[0]["t"] == initial["alarms"][0]["since"]  # times keep every digit
                assert abs(raised[0]["t"] - time.time()) < 5
                code, _, body = await _get(server.port, "/status")
                st = json.loads(body)
                row = next(r for r in st["nodes"] if r["node"] == "pump1")
                assert row["frames"] == 2 and row["battery"] == 86 and row["last"] == {"battery": 86, "temp": 90}
                assert row["per_min"] > 0 and row["quality"] == 1.0 and row["causes"] == {}
                assert st["uplink"]["connected"] is False and st["uplink"]["depth"] >= 2
                assert st["gateway"]["disk_total"] > 0 and st["gateway"]["version"]
                for _ in range(100):  # the sparklines sample every 0.05 s: two samples
                    code, _, body = await _get(server.port, "/status/history?nodes=pump1,nobody")
                    hist = json.loads(body)
                    if len(hist["t"]) >= 2 and 90 in hist["nodes"].get("pump1", {}).get("temp", []):
                        break
                    await asyncio.sleep(0.05)
                assert set(hist["nodes"]) == {"pump1"} and len(hist["t"]) >= 2
                assert 90 in hist["nodes"]["pump1"]["temp"]
                code, head, body = await _get(server.port, "/static/uPlot.iife.min.js")
                assert code == 200 and b"uPlot" in body and "javascript" in head
                assert (await _get(server.port, "/static/../config.py"))[0] == 404
            finally:
                await server.stop()

    asyncio.run(main())


def test_stream_sends_full_state_then_changes_and_events_at_once(small_plant_gateway, frame_sender):
    async def main():
        gw, keys = small_plant_gateway(["pump1", "pump2"])
        async with gw:
            server = StatusServer(config.HttpSection(port=0), gw)
            server.page.tick = 0.2
            await server.start()
            try:
                p1, p2 = frame_sender(gw, "pump1", keys["pump1"]), frame_sender(gw, "pump2", keys["pump2"])
                await asyncio.wait_for(asyncio.gather(p1.send(temp=20), p2.send(temp=21)), 10)
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(b"GET /status/stream HTTP/1.0\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert b"text/event-stream" in head
                [(kind, first)] = await _events(reader, 1)
                assert kind == "state" and first["full"] and {r["node"] for r in first["nodes"]} == {"pump1", "pump2"}
                p1.send(temp=22)
                sent = time.time()
                for _ in range(20):  # the next states carry only pump1, whose row changed
                    [(kind, st)] = await _events(reader, 1)
                    if st["nodes"]:
                        break
                assert not st["full"] and [r["node"] for r in st["nodes"]] == ["pump1"]
                assert st["nodes"][0]["frames"] == 2 and st["nodes"][0]["last"]["temp"] == 22
                assert time.time() - sent < 2
                gw.dispatcher.submit("mechanic", zone="pumps", priority=7)
                got = []
                while not any(e["type"] == "dispatch" for k, e in got if k == "ev"):
                    got += await _events(reader, 1)
                evs = [e for k, e in got if k == "ev"]
                assert evs[0]["type"] == "demand" and evs[0]["zone"] == "pumps"
                assert evs[-1] == {**evs[-1], "type": "dispatch", "resource": "mech1", "state": "assigned"}
                writer.close()
            finally:
                await server.stop()
            assert not server.page._clients

    asyncio.run(main())


def test_node_extra_fields_show_in_rows_and_a_failing_one_is_skipped(small_plant_gateway, frame_sender, caplog):
    async def main():
        gw, keys = small_plant_gateway(["pump1"])
        async with gw:
            server = StatusServer(config.HttpSection(port=0), gw)
            await server.start()
            try:
                await asyncio.wait_for(frame_sender(gw, "pump1", keys["pump1"]).send(temp=20), 10)
                server.page.node_extras.append(lambda node: {"update": "42 %"} if node == "pump1" else {})
                server.page.node_extras.append(lambda node: 1 / 0)
                with caplog.at_level(logging.WARNING, "headrace.page"):
                    st = await server.page.snapshot()
                assert st["nodes"][0]["extra"] == {"update": "42 %"}
                assert "ZeroDivisionError" in caplog.text and "pump1" in caplog.text
                code, _, body = await _get(server.port, "/")
                assert code == 200 and "update: 42 %" in body.decode()
            finally:
                await server.stop()

    asyncio.run(main())


def test_rejects_by_cause_per_node(small_plant_gateway, frame_sender):
    async def main():
        gw, keys = small_plant_gateway(["pump1"])
        async with gw:
            server = StatusServer(config.HttpSection(port=0), gw)
            await server.start()
            try:
                s = frame_sender(gw, "pump1", keys["pump1"])
                await asyncio.wait_for(s.send(temp=20), 10)
                s.seq -= 1
                await asyncio.wait_for(s.send(temp=20), 10)  # the same sequence number again: a replay
                row = (await server.page.snapshot())["nodes"][0]
                assert row["causes"] == {"replay": 1} and row["rejected"] == 1 and row["quality"] == 0.5
                assert (await server.page.snapshot())["uplink"]["rejects"] == {"replay": 1}
            finally:
                await server.stop()

    asyncio.run(main())


def test_the_page_version_is_the_packages_without_importlib_metadata():
    """The status page shows gateway.__version__ (importlib.metadata would cost the gateway half a
    megabyte of RSS): it must be the version pyproject.toml gives the distribution."""
    import subprocess
    import sys
    import tomllib
    from pathlib import Path

    from gateway.runtime.page import version

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert version() == pyproject["project"]["version"]
    loaded = subprocess.run([sys.executable, "-c", "import sys, gateway.runtime.page, gateway.runtime.service; "
                             "print('importlib.metadata' in sys.modules)"], capture_output=True, text=True)
    assert loaded.stdout.strip() == "False", loaded.stderr


@given(st.text())
def test_the_pages_escape_is_htmls(text):
    import html

    from gateway.runtime.page.render import escape
    assert escape(text) == html.escape(text)
