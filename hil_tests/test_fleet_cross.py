"""A cross-gateway dispatch end to end: two gateway processes (two lines), a real mosquitto,
the fleet dispatcher process (`headrace fleet run`), and the mechanics' nodes: the real
firmware under MicroPython over CoAP, each with a simulated worker at its terminal
(firmware/worker.py) who accepts a dispatch and reports it done. Line 1's only mechanic is
busy; its pump needs a mechanic; line 2's mechanic is lent across, accepts and finishes,
and line 1 sees its demand done."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from .rig import REPO, GatewayProcess, mechanic, open_demands, post_demand, received_events, wait_for

FLEET = """
[fleet]
enabled = true
escalate_after = 1
remote = ["electrician"]

[dispatch]
accept_timeout = {accept}
"""


def line(tmp_path, name, port, node, key, home, accept=600, need="mechanic", resource=None, mqtt_extra=""):
    work = tmp_path / name
    work.mkdir()
    extra = FLEET.format(accept=accept) + f"""
[[resources]]
id = "{resource or 'mech-' + name}"
capabilities = ["{need}"]
home = {home}
node = "{node}"
"""
    return GatewayProcess(work, port, {node: key}, extra=extra, gateway_id=name, mqtt_extra=mqtt_extra)


def start_fleet(tmp_path, cfg, log):
    before = (tmp_path / "fleet.log").read_text().count("running")
    fleet = subprocess.Popen([sys.executable, "-m", "gateway", "fleet", "run", "--config", str(cfg)], cwd=REPO,
                             stdout=log, stderr=subprocess.STDOUT)
    wait_for(lambda: (tmp_path / "fleet.log").read_text().count("running") > before, 20, "the fleet dispatcher")
    return fleet


def state(gw, demand: int) -> dict:
    """The demand as its gateway has it; {} once it is done."""
    return next((d for d in open_demands(gw) if d["id"] == demand), {})


def work_done(node, demand: int) -> list[str]:
    """The steps the node's worker took for a demand (accept, done), in order."""
    return [e["step"] for e in node.events("work") if e["demand"] == demand]


def dispatches_applied(node) -> list[int]:
    """The demand of each dispatch command the node applied (a repeat is answered, not applied)."""
    return [e["args"]["demand"] for e in node.events("cmd") if e["cmd"] == "dispatch"]


def test_line2s_mechanic_is_dispatched_across_to_line1s_pump(tmp_path, mosquitto, subscriber):
    k1, k2 = os.urandom(32), os.urandom(32)
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(f'site = "bench"\ntick = 0.1\n[mqtt]\nport = {mosquitto.port}\n')
    log = open(tmp_path / "fleet.log", "wb")
    gws, nodes = [], []
    fleet = start_fleet(tmp_path, cfg, log)
    try:
        l1 = line(tmp_path, "line1", mosquitto.port, "m1", k1, "[2.0, 2.0]").start()
        gws.append(l1)
        l2 = line(tmp_path, "line2", mosquitto.port, "m2", k2, "[60.0, 2.0]").start()
        gws.append(l2)
        m1 = mechanic(tmp_path, l1, "m1", k1, accept_ms=200, work_ms=600000)  # at a long job
        nodes.append(m1)
        m2 = mechanic(tmp_path, l2, "m2", k2, accept_ms=300, work_ms=2000)
        nodes.append(m2)
        for gw in (l1, l2):
            wait_for(lambda gw=gw: gw.metric("headrace_uplink_connected") == 1, 10, "the uplinks")
        busy = post_demand(l1.http_port, {"need": "mechanic", "at": [3, 2], "priority": 9})["id"]
        wait_for(lambda: state(l1, busy).get("state") == "accepted", 10, "line1's mechanic at its long job")
        pump = post_demand(l1.http_port, {"need": "mechanic", "at": [20, 12], "priority": 8})["id"]
        wait_for(lambda: state(l1, pump).get("resource") == "line2/mech-line2", 20,
                 "line1's pump borrowed line2's mechanic")
        (loan,) = [d for d in open_demands(l2) if d["source"] == "loan:line1"]
        assert loan["resource"] == "mech-line2"
        # line2's mechanic gets the usual dispatch command on its own node, accepts and finishes
        wait_for(lambda: not state(l1, pump), 20, "line1's demand done by line2's mechanic")
        assert dispatches_applied(m2) == [loan["id"]] and work_done(m2, loan["id"]) == ["accept", "done"]
        assert dispatches_applied(m1) == [busy] and work_done(m1, busy) == ["accept"]
        assert state(l1, busy)["resource"] == "mech-line1"
        # both event streams show it: the escalation and the borrowed dispatch on line1, the loan on line2
        def finished():
            e = received_events(subscriber)
            return e if sum(x.get("state") == "done" and x["type"] == "dispatch" for x in e) >= 2 else None
        evs = wait_for(finished, 10, "both dispatches done on the events topic")
        one = [(e["type"], e.get("state")) for e in evs if e["gw"] == "line1" and e.get("demand") == pump]
        assert ("escalation", "escalated") in one and ("escalation", "withdrawn") in one
        assert [s for t, s in one if t == "dispatch"] == ["assigned", "accepted", "done"]
        two = [(e["type"], e.get("state")) for e in evs if e["gw"] == "line2"]
        assert ("loan", "granted") in two
        assert [s for t, s in two if t == "dispatch"] == ["assigned", "accepted", "done"]
    finally:
        fleet.terminate()
        fleet.wait(10)
        log.close()
        for node in nodes:
            node.kill()
        for gw in gws:
            gw.stop()


@pytest.mark.long
def test_fleet_demo_lends_line2s_mechanic_to_line1s_pump(tmp_path):
    """`headrace demo --fleet` (`./run.sh demo --fleet`): it ends by itself once the pump is fixed."""
    p = subprocess.run([sys.executable, "-m", "gateway", "demo", "--fleet", "--duration", "90", "--workdir",
                        str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=150)
    assert p.returncode == 0, p.stderr[-2000:]
    out = p.stdout
    assert "(rule:pump3-needs-mechanic)" in out and "mechanic escalated (waited)" in out
    assert "LOAN     mech2 granted for line1" in out
    assert "mechanic → line2/mech2: assigned" in out and "mechanic → line2/mech2: done" in out
    assert "line1's pump was fixed by line2's mechanic" in out
    # the fleet table (printed as text when it changes): line1's demand served by line2's mechanic on loan
    table = out[out.index("LOAN     mech2 granted"):]
    assert "fleet withdrawn (borrowed) served by line2/mech2 (borrowed from line2)" in table
    assert "line2/mech2    mechanic     on loan to line1 #…" in table


@pytest.mark.long
def test_the_lender_killed_mid_loan_carries_on_and_a_lender_that_stays_dead_is_replaced(tmp_path, mosquitto,
                                                                                          subscriber):
    k1, k2, k3 = os.urandom(32), os.urandom(32), os.urandom(32)
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(f'site = "bench"\ntick = 0.1\n[mqtt]\nport = {mosquitto.port}\n')
    log = open(tmp_path / "fleet.log", "wb")
    gws, nodes = [], []
    fleet = start_fleet(tmp_path, cfg, log)
    try:
        l1 = line(tmp_path, "line1", mosquitto.port, "m1", k1, "[2.0, 2.0]", accept=8).start()
        gws.append(l1)
        l2 = line(tmp_path, "line2", mosquitto.port, "m2", k2, "[60.0, 2.0]").start()
        gws.append(l2)
        l3 = line(tmp_path, "line3", mosquitto.port, "m3", k3, "[120.0, 2.0]").start()
        gws.append(l3)
        # line2's mechanic takes 6 s to accept: the kill comes first
        nodes += [mechanic(tmp_path, l1, "m1", k1, accept_ms=200, work_ms=600000),
                  mechanic(tmp_path, l2, "m2", k2, accept_ms=6000, work_ms=500),
                  mechanic(tmp_path, l3, "m3", k3, accept_ms=300, work_ms=500)]
        m2 = nodes[1]
        for gw in gws:
            wait_for(lambda gw=gw: gw.metric("headrace_uplink_connected") == 1, 10, "the uplinks")
        busy = post_demand(l1.http_port, {"need": "mechanic", "at": [3, 2], "priority": 9})["id"]
        wait_for(lambda: state(l1, busy).get("state") == "accepted", 10, "line1's mechanic at its long job")
        pump = post_demand(l1.http_port, {"need": "mechanic", "at": [20, 12], "priority": 8})["id"]
        wait_for(lambda: state(l1, pump).get("resource") == "line2/mech-line2", 20, "line2's mechanic borrowed")
        (loan,) = [d for d in open_demands(l2) if d["source"] == "loan:line1"]
        wait_for(lambda: any(e["gw"] == "line2" and e.get("state") == "granted" for e in received_events(subscriber)),
                 10, "the grant on line2's events (committed)")

        l2.stop(signal.SIGKILL)  # mid-loan
        l2.restart()
        again = [d for d in open_demands(l2) if d["source"] == "loan:line1"]
        assert [(d["id"], d["resource"]) for d in again] == [(loan["id"], "mech-line2")]
        assert again[0]["state"] in ("assigned", "accepted")  # its node may have accepted meanwhile
        wait_for(lambda: not state(l1, pump), 30, "line1's demand done by line2's mechanic")
        # the dispatch reached the node and was applied once, before or after the kill
        assert dispatches_applied(m2) == [loan["id"]] and work_done(m2, loan["id"]) == ["accept", "done"]

        # a second pump demand borrows line2's mechanic again; line2 dies for good
        pump2 = post_demand(l1.http_port, {"need": "mechanic", "at": [20, 12], "priority": 8})["id"]
        wait_for(lambda: state(l1, pump2).get("resource") == "line2/mech-line2", 20, "line2's mechanic borrowed again")
        l2.stop(signal.SIGKILL)
        # line1 times the borrowed dispatch out (accept_timeout 8 s), escalates again: line3's mechanic
        got = wait_for(lambda: d if (d := state(l1, pump2)).get("resource") == "line3/mech-line3" else None, 30,
                       "the demand reassigned to line3's mechanic")
        assert got["attempt"] == 2
        wait_for(lambda: not state(l1, pump2), 20, "line1's second demand done by line3's mechanic")

        def steps():
            got = [(e.get("resource"), e.get("state")) for e in received_events(subscriber)
                   if e["gw"] == "line1" and e["type"] == "dispatch" and e.get("demand") == pump2]
            return got if len(got) >= 5 else None
        assert wait_for(steps, 10, "line1's steps on its events topic")[:5] == [
            ("line2/mech-line2", "assigned"), ("line2/mech-line2", "timeout"), ("line3/mech-line3", "assigned"),
            ("line3/mech-line3", "accepted"), ("line3/mech-line3", "done")]
    finally:
        fleet.terminate()
        fleet.wait(10)
        log.close()
        for node in nodes:
            node.kill()
        for gw in gws:
            gw.stop()


def test_the_fleet_dispatcher_restarted_mid_dispatch_rebuilds_from_the_sinks_database(tmp_path, mosquitto,
                                                                                         subscriber):
    """The real sink stores the site's events in SQLite; the fleet dispatcher and the sink are killed
    mid-loan, the lender's steps happen while they are down, the sink comes back and stores them,
    and the fleet dispatcher comes back without its broker session
    (a new client id): it rebuilds from the database and relays the steps line1 never got."""
    import sqlite3

    from .rig import SinkProcess

    k1, k2 = os.urandom(32), os.urandom(32)
    db = tmp_path / "cloud.sqlite"
    sink_cfg = tmp_path / "sink.toml"
    sink_cfg.write_text(f'[sink]\nsqlite = "{db}"\nsource = "mqtt"\n[mqtt]\nport = {mosquitto.port}\n'
                        f'client_id = "sink-fleet-test"\n')
    sink = SinkProcess(tmp_path, sink_cfg, "sink").start()
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(f'site = "bench"\ntick = 0.1\ndatabase = "{db}"\n[mqtt]\nport = {mosquitto.port}\n'
                   f'client_id = "fleet-a"\n')
    log = open(tmp_path / "fleet.log", "wb")
    gws, nodes = [], []
    fleet = start_fleet(tmp_path, cfg, log)
    try:
        l1 = line(tmp_path, "line1", mosquitto.port, "m1", k1, "[2.0, 2.0]").start()
        gws.append(l1)
        l2 = line(tmp_path, "line2", mosquitto.port, "m2", k2, "[60.0, 2.0]").start()
        gws.append(l2)
        nodes += [mechanic(tmp_path, l1, "m1", k1, accept_ms=200, work_ms=600000),
                  mechanic(tmp_path, l2, "m2", k2, accept_ms=3000, work_ms=500)]
        m2 = nodes[1]
        busy = post_demand(l1.http_port, {"need": "mechanic", "at": [3, 2], "priority": 9})["id"]
        wait_for(lambda: state(l1, busy).get("state") == "accepted", 10, "line1's mechanic at its long job")
        pump = post_demand(l1.http_port, {"need": "mechanic", "at": [20, 12], "priority": 8})["id"]
        wait_for(lambda: state(l1, pump).get("resource") == "line2/mech-line2", 20, "line2's mechanic borrowed")
        fleet.kill()  # kill -9, mid-dispatch: the fleet dispatcher and the sink worker both
        fleet.wait()
        sink.kill()
        (loan,) = [d for d in open_demands(l2) if d["source"] == "loan:line1"]
        # line2's mechanic accepts (3 s after the dispatch) and finishes while the cloud is down
        wait_for(lambda: work_done(m2, loan["id"]) == ["accept", "done"], 20, "line2's mechanic done")
        wait_for(lambda: not state(l2, loan["id"]), 10, "the loan done on line2")
        sink.start()  # its persistent session kept the events that came while it was down

        def stored_done():
            with sqlite3.connect(db) as c:
                return c.execute("SELECT count(*) FROM events WHERE gateway = 'line2' AND type = 'dispatch' "
                                 "AND key LIKE ?", (f"{loan['id']}|done|%",)).fetchone()[0]
        wait_for(stored_done, 20, "the sink to store line2's done")
        assert state(l1, pump).get("state") == "assigned"  # nobody told line1 yet
        cfg.write_text(cfg.read_text().replace('client_id = "fleet-a"', 'client_id = "fleet-b"'))
        fleet = start_fleet(tmp_path, cfg, log)
        wait_for(lambda: not state(l1, pump), 20, "line1's demand done, relayed after the rebuild")
        assert "rebuilt from" in (tmp_path / "fleet.log").read_text()
    finally:
        fleet.terminate()
        fleet.wait(10)
        log.close()
        for node in nodes:
            node.kill()
        for gw in gws:
            gw.stop()
        sink.stop()
