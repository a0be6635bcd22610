"""bench/peers.py's bookkeeping of a run: the hypervisor's steal during the load, for every
gateway whose run measured it (headrace's own runs, and the Node-RED harness's)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

peers = pytest.importorskip("bench.peers")


class _Machine:
    """/proc/stat's totals as MachineLoad.snap gives them: 10 of 1,000 ticks stolen over the run."""

    def __init__(self):
        self.calls = 0

    def snap(self, label):
        self.calls += 1
        return {"sys": {"steal": 0 if self.calls == 1 else 10, "total": 0 if self.calls == 1 else 1000}}


def _result(gateway, **extra):
    return {"gateway": gateway, "transport": "coap", "load": "nodered", "sent": 100, "delivered": 100,
            "duplicates": 0, "cpu_pct": 1.0, "rss_idle_mb": 1, "rss_peak_mb": 2, "lat_p50_ms": 1,
            "lat_p99_ms": 2, "foreign_cpu_pct": 0.0, "clean": True, **extra}


@pytest.mark.parametrize("gateway, extra, shown", [
    ("headrace", {"steal_pct": 4.5}, "steal 4.5 % in the load, 1.0 % over the run"),
    ("nodered", {"harness": {"sys_steal_pct": 3.2}}, "steal 3.2 % in the load, 1.0 % over the run"),
    ("nodered", {"harness": {"sys_steal_pct": 7.9}}, "steal 7.9 % in the load, 1.0 % over the run STOLEN"),
    ("thingsboard", {}, "steal – % in the load, 1.0 % over the run"),  # its harness does not measure it
])
def test_a_run_shows_the_steal_during_its_load(monkeypatch, gateway, extra, shown):
    runner = {"headrace": "run_headrace", "nodered": "run_nodered", "thingsboard": "run_thingsboard"}[gateway]
    monkeypatch.setattr(peers, runner, lambda *a: _result(gateway, **extra))
    o = SimpleNamespace(duration=1, steal_ok=False)
    r = peers.one_run((gateway, "coap" if gateway != "thingsboard" else "thingsboard/coap", "nodered"),
                      100.0, o, _Machine(), {"nodered": None, "thingsboard": None})
    assert shown in peers.describe(r)
    # past the limit, during the load, the run is not counted (it goes again)
    assert r["clean"] is (max(1.0, r.get("load_steal_pct", 0.0)) < peers.STEAL_LIMIT)
