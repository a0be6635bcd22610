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


def _line(demands, resources):
    from gateway.config.resources import Resource
    from gateway.decisions.dispatch import ResourceState

    res = {rid: ResourceState(Resource(rid, ("mechanic",), (0.0, 0.0)), (0.0, 0.0), demand=d)
           for rid, d in resources.items()}
    return types.SimpleNamespace(dispatcher=types.SimpleNamespace(demands={d.id: d for d in demands}, resources=res))


def test_fleet_view_shows_escalations_loans_and_whose_resource_serves(capsys):
    """`headrace demo --fleet`'s view: line1's pump demand escalated and served by line2's mechanic on loan."""
    from gateway.decisions.dispatch import Demand
    from gateway.tools.demo_fleet import FleetView

    busy = Demand(1764900000001, "mechanic", (2.0, 2.0), 9, "operator", 0.0, state="accepted", resource="mech1")
    pump = Demand(1764900000002, "mechanic", (20.0, 12.0), 8, "rule:pump", 0.0, state="accepted",
                  resource="line2/mech2", remote="line2")
    waiting = Demand(1764900000003, "electrician", (20.0, 12.0), 5, "api", 0.0, escalated=True)
    loan = Demand(1764900000107, "mechanic", (20.0, 12.0), 8, "loan:line1", 0.0, state="accepted",
                  resource="mech2", loan="line1/1764900000002")
    gws = {"line1": _line([busy, pump, waiting], {"mech1": busy.id}),
           "line2": _line([loan], {"mech2": loan.id, "mech3": None})}
    out = io.StringIO()
    view = FleetView(gws, console=Console(file=out, force_terminal=True, width=160, height=60, color_system=None))
    view.event("line1", {"type": "escalation", "demand": pump.id, "need": "mechanic", "state": "withdrawn",
                         "why": "borrowed", "t": 0.0})
    with view:
        view.draw()
    text = out.getvalue()
    rows = {line.split()[1]: line.split() for line in text.splitlines() if line.startswith(("line1 ", "line2 "))}
    assert rows["#…0002"][:7] == ["line1", "#…0002", "mechanic", "8", "accepted", "withdrawn", "(borrowed)"]
    assert "line2/mech2" in rows["#…0002"] and "borrowed from line2" in " ".join(rows["#…0002"])
    assert rows["#…0003"][4:6] == ["open", "escalated"] and rows["#…0001"][-1] == "line1/mech1"
    assert "lent to line1 #…0002" in " ".join(rows["#…0107"])
    said = {line.split()[0]: " ".join(line.split()[1:]) for line in text.splitlines() if "/mech" in line[:12]}
    assert said == {"line1/mech1": "mechanic line1 #…0001 accepted",
                    "line2/mech2": "mechanic on loan to line1 #…0002 accepted", "line2/mech3": "mechanic free"}
    assert "FLEET    #…0002 mechanic withdrawn (borrowed)" in text  # the latest events
    plain = FleetView(gws, console=Console(file=io.StringIO(), force_terminal=False))
    with plain:
        plain.draw()
        plain.draw()  # unchanged: not printed again
    printed = capsys.readouterr().out
    assert printed.count("fleet: demands open") == 1
    assert "line1  #…0002  mechanic   p8  accepted  fleet escalated" not in printed  # it was never told
    assert "served by line2/mech2 (borrowed from line2)" in printed and "fleet escalated" in printed
