"""The demo's live view: a table redrawn in place on a terminal (rich), plain lines otherwise;
on a real gateway in this process with frames offered as a transport offers them."""
from __future__ import annotations

import asyncio
import io
import types

from rich.console import Console

from gateway.tools.demo import LiveView


def _node(name: str, transport: str):
    return types.SimpleNamespace(name=name, config={"transport": transport}, acked=3, proc=None)


def test_terminal_table_and_plain_lines(small_plant_gateway, frame_sender, capsys):
    async def main():
        gw, keys = small_plant_gateway(["pump1"])
        async with gw:
            s = frame_sender(gw, "pump1", keys["pump1"])
            await asyncio.wait_for(s.send(temp=41.5), 10)
            await asyncio.wait_for(s.send(temp=95.25), 10)  # raises pump1-hot
            out = io.StringIO()
            tty = LiveView(gw, [_node("pump1", "serial")], "embedded:1883", page="http://127.0.0.1:9/",
                           console=Console(file=out, force_terminal=True, width=140, color_system=None))
            assert tty.tty
            with tty:
                tty.draw()
            text = out.getvalue()
            assert "status page http://127.0.0.1:9/" in text
            row = next(line for line in text.splitlines() if line.startswith("pump1"))
            assert row.split()[:4] == ["pump1", "serial", "2", "3"] and "temp=95.25" in row
            assert "uplink  MQTT embedded:1883 DOWN" in text
            assert "pump1-hot" in text and "critical" in text and "pump1/temp" in text
            assert "ALARM    raised   pump1-hot (pump1/temp = 95.25, critical)" in text
            plain = LiveView(gw, [_node("pump1", "serial")], "embedded:1883",
                             console=Console(file=io.StringIO(), force_terminal=False))
            assert not plain.tty
            with plain:
                plain.draw()
                plain.event({"type": "alarm", "rule": "r", "state": "cleared", "t": 0.0, "value": 1.0,
                             "severity": "info", "series": "pump1/temp"})
        return capsys.readouterr().out

    printed = asyncio.run(main())
    assert "frames 2 (" in printed and "uplink DOWN" in printed
    assert "ALARM    cleared  r (pump1/temp = 1.00, info)" in printed
