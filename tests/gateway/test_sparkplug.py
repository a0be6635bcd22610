"""Sparkplug B payloads from spool records, the [sparkplug] section, bdSeq in the spool."""
import asyncio
import json
import math

import cbor2
import pytest

from gateway.config import from_dict
from gateway.errors import ConfigError
from gateway.runtime.spool import Spool
from gateway.runtime.uplink import batch, events
from gateway.runtime.uplink import sparkplug_payload as spb
from gateway.runtime.uplink.sparkplug_b_pb2 import Payload


def frame(node, seq, t0, records):
    senml = cbor2.dumps([{-2: node + "/", -3: t0, **r} for r in records[:1]] + records[1:])
    return batch.frame_body(node, seq, t0 + 0.5, senml)


def test_a_frame_becomes_metrics_in_record_order_with_millisecond_times():
    body = frame("pump3", 7, 1700000000.125, [{0: "vib", 2: 4.25}, {0: "temp", 6: 0.5, 2: 21.5},
                                              {0: "state", 3: "run"}, {0: "door", 4: True}])
    node, points = spb.readings_of(body)
    assert node == "pump3"
    assert points == [("vib", spb.DOUBLE, 1700000000125, 4.25), ("temp", spb.DOUBLE, 1700000000625, 21.5),
                      ("state", spb.STRING, 1700000000125, "run"), ("door", spb.BOOLEAN, 1700000000125, True)]


def test_births_declare_name_alias_and_datatype_and_data_uses_aliases_only():
    cat = spb.Catalog([(spb.METRIC_BDSEQ, spb.INT64), (spb.METRIC_REBIRTH, spb.BOOLEAN)])
    nb = Payload.FromString(spb.node_birth(cat, 3).SerializeToString())
    assert nb.seq == 0 and nb.timestamp > 0
    by = {m.name: m for m in nb.metrics}
    assert by["bdSeq"].long_value == 3 and by["bdSeq"].datatype == spb.INT64
    assert by["Node Control/Rebirth"].boolean_value is False and by["Node Control/Rebirth"].datatype == spb.BOOLEAN
    dev = cat.device("pump3")
    vib = cat.device_metric(dev, "vib", spb.DOUBLE)
    db = Payload.FromString(spb.device_birth(dev).SerializeToString())
    names = {m.name: m for m in db.metrics}
    assert set(names) >= {"vib", "Commands/set_period", "Commands/result"}
    assert all(m.alias and m.datatype for m in db.metrics)
    assert names["vib"].is_null  # no value sent yet
    aliases = [m.alias for m in nb.metrics] + [m.alias for m in db.metrics]
    assert len(aliases) == len(set(aliases))  # unique across the edge node
    dd = Payload.FromString(spb.data([(vib, 1700000000125, 4.25), (vib, 1700000000225, -1.5)], True)
                            .SerializeToString())
    assert [(m.alias, m.timestamp, m.double_value, m.is_historical, m.name) for m in dd.metrics] == [
        (vib.alias, 1700000000125, 4.25, True, ""), (vib.alias, 1700000000225, -1.5, True, "")]
    again = Payload.FromString(spb.device_birth(dev).SerializeToString())  # a rebirth states the last value
    assert {m.name: m.double_value for m in again.metrics}["vib"] == -1.5
    assert [m.datatype for m in spb.data([(vib, 1, 2.0)], False, datatypes=True).metrics] == [spb.DOUBLE]
    assert not spb.data([(vib, 1, 2.0)], False).metrics[0].HasField("datatype")


def test_ndeath_carries_bdseq_and_no_seq():
    p = Payload.FromString(spb.death(255))
    assert not p.HasField("seq")
    assert [(m.name, m.datatype, m.long_value) for m in p.metrics] == [("bdSeq", spb.INT64, 255)]


def test_windows_and_alarms_have_documented_names():
    w = batch.window_body("pump3/vib", 10.0, 1700000000.0, 4, 1.0, 7.0, 12.0, 50.0, 1.0, 7.0, 3.1, 0)
    node, points = spb.window_metrics(w)
    assert node == "pump3"
    assert points == [("Windows/10s/vib/count", spb.INT64, 1700000010000, 4),
                      ("Windows/10s/vib/min", spb.DOUBLE, 1700000010000, 1.0),
                      ("Windows/10s/vib/max", spb.DOUBLE, 1700000010000, 7.0),
                      ("Windows/10s/vib/mean", spb.DOUBLE, 1700000010000, 3.0),
                      ("Windows/10s/vib/twa", spb.DOUBLE, 1700000010000, 3.1)]
    _, empty = spb.window_metrics(batch.window_body("n/x", 1.0, 0.0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    assert math.isnan(empty[3][3])
    alarm = events.event_body({"type": "alarm", "rule": "pump3-vib", "state": "raised", "t": 1700000001.5,
                               "value": 7.42, "severity": "warning", "node": "pump3"})
    assert spb.event_metrics(alarm) == [("Alarms/pump3-vib/active", spb.BOOLEAN, 1700000001500, True),
                                        ("Alarms/pump3-vib/value", spb.DOUBLE, 1700000001500, 7.42)]
    demand = events.event_body({"type": "demand", "id": 4, "need": "mechanic", "t": 1700000002.0})
    [(name, datatype, at, text)] = spb.event_metrics(demand)
    assert (name, datatype, at, json.loads(text)["id"]) == ("Events/demand", spb.STRING, 1700000002000, 4)


def test_command_metrics_become_headrace_commands():
    assert json.loads(spb.command_of("Commands/set_period", 500, "spb-1")) == {
        "id": "spb-1", "cmd": "set_period", "args": {"period_ms": 500}}
    assert json.loads(spb.command_of("Commands/reboot", True, "spb-2")) == {"id": "spb-2", "cmd": "reboot"}
    assert spb.command_of("Commands/json", '{"id": "x", "cmd": "reboot"}', "spb-3") == b'{"id": "x", "cmd": "reboot"}'
    with pytest.raises(ValueError):
        spb.command_of("Commands/reboot", False, "spb-4")
    with pytest.raises(ValueError):
        spb.command_of("Commands/json", 5, "spb-5")
    with pytest.raises(KeyError):
        spb.command_of("Commands/format_disk", True, "spb-6")


def test_received_int64_values_are_signed():
    p = Payload()
    m = p.metrics.add()
    m.datatype = spb.INT64
    spb.set_value(m, spb.INT64, -5)
    assert spb.value_of(Payload.FromString(p.SerializeToString()).metrics[0]) == -5


def test_sparkplug_section_is_checked():
    cfg = from_dict({"sparkplug": {"enabled": True, "group_id": "plant 1", "primary_host_id": "scada"}})
    assert cfg.sparkplug.enabled and cfg.sparkplug.group_id == "plant 1" and cfg.sparkplug.edge_node_id == ""
    assert not from_dict({}).sparkplug.enabled  # the native format stays the default
    for raw, key in (({"group_id": "a/b"}, "group_id"), ({"edge_node_id": "gw#1"}, "edge_node_id"),
                     ({"primary_host_id": "+"}, "primary_host_id"), ({"device_timeout": 0}, "device_timeout"),
                     ({"group_id": ""}, "group_id"), ({"enabled": "yes"}, "enabled"), ({"groupid": "x"}, "groupid")):
        with pytest.raises(ConfigError) as err:
            from_dict({"sparkplug": raw})
        assert f"[sparkplug] {key}" in str(err.value)
    from gateway.config.advice import config_warnings

    advice = config_warnings(from_dict({"sparkplug": {"enabled": True, "qos": 0}}))
    assert any("[sparkplug] primary_host_id is empty" in a for a in advice)
    assert any("[sparkplug] qos = 0" in a for a in advice)
    assert not [a for a in config_warnings(cfg) if "sparkplug" in a]
    with pytest.raises(ConfigError, match=r"\[sparkplug\] qos"):
        from_dict({"sparkplug": {"qos": 2}})
    with pytest.raises(ConfigError, match=r"\[sparkplug\] enabled.*one uplink"):
        from_dict({"sparkplug": {"enabled": True}, "jetstream": {"enabled": True}})


def test_bdseq_and_the_last_record_id_survive_a_reopen(tmp_path):
    async def main():
        spool = await Spool.open(tmp_path / "s.sqlite")
        assert await spool.get_meta("bd", -1) == -1 and await spool.last_id() == 0
        await spool.set_meta("bd", 7)
        await spool.commit([("frame", b"x"), ("frame", b"y")], {})
        ids = [r[0] for r in await spool.read(0, 0, 10)]
        await spool.delete(ids)
        await spool.close()
        spool = await Spool.open(tmp_path / "s.sqlite")
        try:
            assert await spool.get_meta("bd") == 7
            assert await spool.last_id() == ids[-1]  # ids are never reused, even after deletes
        finally:
            await spool.close()

    asyncio.run(main())


# -- what hosts send: NCMD, DCMD, STATE from the wire ---------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from gateway.decisions.downlink import Downlink  # noqa: E402
from gateway.runtime.metrics import Metrics  # noqa: E402
from gateway.runtime.registry import Registry  # noqa: E402
from gateway.runtime.uplink.sparkplug import SparkplugUplink  # noqa: E402


def edge_node(tmp_path=None):
    cfg = from_dict({"sparkplug": {"enabled": True, "group_id": "g", "primary_host_id": "scada"},
                     "gateway": {"id": "gw"}})
    registry = Registry()
    registry.add("pump3")
    up = SparkplugUplink(cfg, None, None, Metrics())
    up.downlink = Downlink(registry, on_result=up.command_result)
    up.catalog.device("pump3")
    return up


def dcmd(*metrics) -> bytes:
    p = Payload(timestamp=1)
    for name, datatype, field, value in metrics:
        m = p.metrics.add()
        m.name, m.datatype = name, datatype
        setattr(m, field, value)
    return p.SerializeToString()


def test_dcmd_metrics_are_validated_like_cmd_topic_commands():
    up = edge_node()
    up._message("spBv1.0/g/DCMD/gw/pump3", dcmd(("Commands/set_period", 4, "long_value", 500),
                                                 ("Commands/set_period", 4, "long_value", 5),
                                                 ("Commands/identify", 10, "double_value", 2.5),
                                                 ("Commands/json", 12, "string_value",
                                                  '{"id": "c9", "cmd": "set_batch", "args": {"batch": 4}}'),
                                                 ("Node Control/Rebirth", 11, "boolean_value", True)))
    up._message("spBv1.0/g/DCMD/gw/ghost", dcmd(("Commands/reboot", 11, "boolean_value", True)))
    assert [(c.cmd, c.args) for c in up.downlink.pending("pump3")] == [("set_period", {"period_ms": 500}),
                                                                       ("set_batch", {"batch": 4})]
    assert up.metrics.total("headrace_commands_total") == 6
    assert up.metrics.by_label("headrace_commands_total") == [({"result": "queued"}, 2), ({"result": "rejected"}, 4)]


def test_state_from_the_primary_host_is_checked_and_ordered():
    up = edge_node()
    up._message("spBv1.0/STATE/scada", b'{"online": true, "timestamp": 10}')
    assert up._host_up.is_set()
    up._message("spBv1.0/STATE/scada", b'{"online": false, "timestamp": 9}')  # older: ignored
    assert up._host_up.is_set()
    up._message("spBv1.0/STATE/scada", b'{"online": "no", "timestamp": 11}')  # not a STATE: counted
    up._message("spBv1.0/STATE/scada", b"ONLINE")  # the pre-3.0 form
    assert up._host_up.is_set()
    assert up.metrics.total("headrace_sparkplug_rejected_total") == 2
    up._message("spBv1.0/STATE/scada", b'{"online": false, "timestamp": 12}')
    assert not up._host_up.is_set()


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["spBv1.0/g/NCMD/gw", "spBv1.0/g/DCMD/gw/pump3", "spBv1.0/STATE/scada"]),
       st.one_of(st.binary(max_size=200),
                 st.builds(lambda b, i, x: b[:i] + bytes([x]) + b[i + 1:],
                           st.just(dcmd(("Commands/set_period", 4, "long_value", 500))),
                           st.integers(0, 20), st.integers(0, 255))))
def test_fuzz_host_messages_are_taken_or_counted_never_raised(topic, payload):
    up = edge_node()
    up._message(topic, payload)  # a command, a rejection or a counted bad message; nothing escapes
    assert len(up.downlink.pending("pump3")) <= 1
