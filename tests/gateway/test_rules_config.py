"""[[rules]], [[resources]], [zones] and [dispatch]: what is accepted, and errors that name the rule and the fix."""
import math

import pytest

from gateway import config
from gateway.errors import ConfigError
from gateway.runtime.registry import Registry
from gateway.config import check_nodes

MECH = {"id": "mech1", "capabilities": ["mechanic"], "home": [0, 0], "speed": 1.5}
ZONES = {"points": {"hall": [0, 0], "pumps": [20, 10], "dock": [40, 0]},
         "edges": [["hall", "pumps"], ["pumps", "dock"]]}


def cfg(*rules, resources=(MECH,), **extra):
    return config.from_dict({"rules": list(rules), "resources": list(resources), "zones": ZONES,
                             "aggregate": {"widths": [10, 60]}, **extra})


def test_every_kind_parses():
    c = cfg({"name": "vib-high", "series": "pump1/vib", "above": 7.1, "hysteresis": 0.5, "for": 5},
            {"name": "temp-rise", "kind": "rate", "series": "pump1/temp", "above": 0.2},
            {"name": "vib-1min", "kind": "window", "series": "pump1/vib", "width": 60, "stat": "mean", "above": 7.1,
             "emit": "demand", "need": "mechanic", "priority": 8, "zone": "pumps"},
            {"name": "pump1-silent", "kind": "stale", "node": "pump1", "after": 30, "severity": "critical"},
            {"name": "temp-silent", "kind": "stale", "series": "pump1/temp", "after": 10},
            {"name": "overheat", "all": [{"series": "pump1/temp", "above": 80},
                                         {"series": "pump1/pressure", "below": 1.5, "hysteresis": 0.2},
                                         {"kind": "window", "series": "pump1/vib", "width": 10, "stat": "rms",
                                          "above": 5}], "for": 10, "emit": "demand", "need": "mechanic",
             "at": [3, 4.5]})
    r = {x.name: x for x in c.rules}
    assert r["vib-high"].conditions[0].clear == pytest.approx(6.6) and r["vib-high"].duration == 5.0
    assert r["vib-1min"].emit == "demand" and r["vib-1min"].zone == "pumps" and r["vib-1min"].priority == 8
    assert r["pump1-silent"].mode == "stale" and r["pump1-silent"].node == "pump1" and not r["pump1-silent"].series
    assert r["overheat"].mode == "all" and len(r["overheat"].conditions) == 3 and r["overheat"].at == (3.0, 4.5)
    assert r["overheat"].conditions[1].clear == pytest.approx(1.7)
    assert c.zones.routed and c.resources[0].speed == 1.5


@pytest.mark.parametrize("rule, key, fix", [
    ({"series": "pump1/vib", "above": 1}, "[rules[0]] name", 'name = "'),
    ({"name": "r", "series": "pump1/vib"}, "[rules.r] above", "above = 7.1"),
    ({"name": "r", "series": "pump1/vib", "above": 1, "below": 0}, "[rules.r] above", "above = 7.1"),
    ({"name": "r", "series": "vib", "above": 1}, "[rules.r] series", "pump1/vib"),
    ({"name": "r", "series": "pump1/vib", "above": "7"}, "[rules.r] above", "above = 7.1"),
    ({"name": "r", "series": "pump1/vib", "above": 1, "hysteresis": -1}, "[rules.r] hysteresis", ">= 0"),
    ({"name": "r", "series": "pump1/vib", "above": 1, "for": -1}, "[rules.r] for", "for = 10"),
    ({"name": "r", "kind": "window", "series": "pump1/vib", "above": 1}, "[rules.r] width", "width = 60"),
    ({"name": "r", "kind": "window", "series": "pump1/vib", "width": 30, "above": 1}, "[rules.r] width",
     "add 30 to [aggregate] widths"),
    ({"name": "r", "kind": "window", "series": "pump1/vib", "width": 60, "stat": "median", "above": 1},
     "[rules.r] stat", "rms"),
    ({"name": "r", "series": "pump1/vib", "above": 1, "stat": "mean"}, "[rules.r] stat", 'kind = "window"'),
    ({"name": "r", "kind": "stale", "after": 5}, "[rules.r] node", 'node = "pump1"'),
    ({"name": "r", "kind": "stale", "node": "pump1"}, "[rules.r] after", "after = 30"),
    ({"name": "r", "kind": "stale", "node": "pump1", "after": 5, "above": 1}, "[rules.r] above", "after = seconds"),
    ({"name": "r", "kind": "bogus"}, "[rules.r] kind", "threshold"),
    ({"name": "r", "series": "pump1/vib", "above": 1, "treshold": 2}, "[rules.r] treshold", "valid keys"),
    ({"name": "r", "all": [{"series": "pump1/t", "above": 1}, {"series": "pump2/t", "above": 1}]},
     "[rules.r] all", "one node only"),
    ({"name": "r", "all": []}, "[rules.r] all", "all = ["),
    ({"name": "r", "all": [{"series": "pump1/t", "above": 1}], "series": "pump1/t"}, "[rules.r] series",
     "member table"),
    ({"name": "r", "any": [{"series": "pump1/t", "above": 1, "after": 3}]}, "[rules.r] any[0] after", "valid keys"),
    ({"name": "r", "series": "pump1/vib", "above": 1, "emit": "demand"}, "[rules.r] need", 'need = "mechanic"'),
    ({"name": "r", "series": "pump1/vib", "above": 1, "emit": "demand", "need": "welder", "zone": "hall"},
     "[rules.r] need", "[[resources]] capabilities"),
    ({"name": "r", "series": "pump1/vib", "above": 1, "emit": "demand", "need": "mechanic"}, "[rules.r] at",
     "zone ="),
    ({"name": "r", "series": "pump1/vib", "above": 1, "emit": "demand", "need": "mechanic", "zone": "roof"},
     "[rules.r] zone", "hall"),
    ({"name": "r", "series": "pump1/vib", "above": 1, "emit": "demand", "need": "mechanic", "at": [1]},
     "[rules.r] at", "at = [12.0, 4.5]"),
    ({"name": "r", "series": "pump1/vib", "above": 1, "emit": "demand", "need": "mechanic", "at": [1, 2],
      "priority": 11}, "[rules.r] priority", "1 to 10"),
    ({"name": "r", "series": "pump1/vib", "above": 1, "need": "mechanic"}, "[rules.r] need", 'emit = "demand"'),
    ({"name": "r", "series": "pump1/vib", "above": 1, "severity": "panic"}, "[rules.r] severity", "critical"),
    ({"name": "r", "series": "pump1/vib", "above": 1, "emit": "page"}, "[rules.r] emit", "alarm"),
])
def test_bad_rules_name_the_rule_and_the_fix(rule, key, fix):
    with pytest.raises(ConfigError) as info:
        cfg(rule)
    assert info.value.key == key
    assert fix in str(info.value)


def test_duplicate_rule_names():
    with pytest.raises(ConfigError, match=r"\[rules.a\] name: used by two rules"):
        cfg({"name": "a", "series": "p/v", "above": 1}, {"name": "a", "series": "p/v", "below": 1})


@pytest.mark.parametrize("res, key, fix", [
    ({"capabilities": ["x"], "home": [0, 0]}, "[resources[0]] id", 'id = "mech1"'),
    ({"id": "m", "home": [0, 0]}, "[resources.m] capabilities", '["mechanic"]'),
    ({"id": "m", "capabilities": ["x"]}, "[resources.m] home", "home = [x, y]"),
    ({"id": "m", "capabilities": ["x"], "home": [0, 0], "speed": 0}, "[resources.m] speed", "speed = 1.4"),
    ({"id": "m", "capabilities": ["x"], "home": [0, 0], "battery": 3}, "[resources.m] battery", "valid keys"),
])
def test_bad_resources(res, key, fix):
    with pytest.raises(ConfigError) as info:
        config.from_dict({"resources": [res]})
    assert info.value.key == key and fix in str(info.value)


def test_two_resources_on_one_node_or_one_id():
    with pytest.raises(ConfigError, match="already mirrors"):
        config.from_dict({"resources": [dict(MECH, node="n1"), dict(MECH, id="mech2", node="n1")]})
    with pytest.raises(ConfigError, match="used by two resources"):
        config.from_dict({"resources": [MECH, MECH]})


@pytest.mark.parametrize("zones, key", [
    ({"points": {"a": [0, 0]}, "edges": [["a", "b"]]}, "[zones] edges[0]"),
    ({"points": {"a": [0, 0], "b": [1, 1]}, "edges": [["a", "b", -1]]}, "[zones] edges[0]"),
    ({"points": {"a": [0, "x"]}}, "[zones] points.a"),
    ({"points": {}, "paths": []}, "[zones] paths"),
])
def test_bad_zones(zones, key):
    with pytest.raises(ConfigError) as info:
        config.from_dict({"zones": zones})
    assert info.value.key == key


def test_dispatch_section():
    c = config.from_dict({"dispatch": {"tick": 0.1, "accept_timeout": 30}})
    assert c.dispatch.tick == 0.1 and c.dispatch.accept_timeout == 30.0
    with pytest.raises(ConfigError, match=r"\[dispatch\] tick"):
        config.from_dict({"dispatch": {"tick": 0}})


def test_check_config_names_unregistered_nodes(tmp_path, capsys):
    from gateway.tools import cli
    reg = Registry(path=tmp_path / "nodes.toml")
    reg.add("pump1")
    reg.save()
    c = cfg({"name": "vib", "series": "pump1/vib", "above": 7.1}, resources=[dict(MECH, node="mech1")],
            gateway={"registry": str(reg.path)})
    with pytest.raises(ConfigError, match=r"\[resources.mech1\] node: node 'mech1' is not in the registry"):
        check_nodes(c, Registry.load(reg.path))
    path = tmp_path / "g.toml"
    path.write_text(f'[gateway]\nregistry = "{reg.path}"\n[aggregate]\nwidths = [10]\n'
                    '[[rules]]\nname = "vib"\nkind = "window"\nseries = "pump1/vib"\nwidth = 60\nabove = 7.1\n')
    assert cli.main(["gateway", "check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "[rules.vib] width" in err and "fix: add 60 to [aggregate] widths" in err
    path.write_text(f'[gateway]\nregistry = "{reg.path}"\n'
                    '[[rules]]\nname = "gone"\nkind = "stale"\nnode = "pump2"\nafter = 5\n')
    assert cli.main(["gateway", "check-config", "--config", str(path)]) == 2
    assert "[rules.gone] node: node 'pump2' is not in the registry" in capsys.readouterr().err
    path.write_text(f'[gateway]\nregistry = "{reg.path}"\n'
                    '[[rules]]\nname = "vib"\nseries = "pump1/vib"\nabove = 7.1\n')
    assert cli.main(["gateway", "check-config", "--config", str(path)]) == 0
    assert "1 rules, 0 resources" in capsys.readouterr().out


def test_zone_travel():
    z = cfg().zones
    assert z.distance((0, 0), (40, 0)) == pytest.approx(2 * math.hypot(20, 10))  # hall → pumps → dock
    assert z.route((0, 0), (40, 1)) == [(0.0, 0.0), (20.0, 10.0), (40.0, 0.0), (40, 1)]
    assert z.distance((1, 0), (2, 0)) == 1.0  # both nearest the hall: straight
    islands = config.from_dict({"zones": {"points": {"a": [0, 0], "b": [10, 0], "c": [50, 0]},
                                          "edges": [["a", "b", 30]]}}).zones
    assert islands.distance((0, 0), (10, 0)) == 30.0
    assert islands.distance((0, 0), (50, 0)) == math.inf and islands.route((0, 0), (50, 0)) == []
    assert config.from_dict({}).zones.distance((0, 0), (3, 4)) == 5.0
