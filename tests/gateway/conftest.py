"""Fixtures shared by the gateway's tests: a real pipeline over a real SQLite spool and the
node frames it takes; a real gateway in this process with nodes that offer frames as a
transport does; frames of three nodes for batch tests. Test modules take these as fixtures;
none imports another test module.

    def test_x(pipeline_rig):
        async def main():
            _, spool, pipe, task = await pipeline_rig.make()
            ...                                   # offer pipeline_rig.frame(seq) to pipe
            await pipeline_rig.stop(spool, task)
        asyncio.run(main())
"""
from __future__ import annotations

import asyncio
import random
import socket
import time
from pathlib import Path

import cbor2
import pytest

from gateway import config
from gateway.config import from_dict
from gateway.protocol import cose
from gateway.runtime.ingest import Ingest
from gateway.runtime.metrics import Metrics
from gateway.runtime.pipeline import Pipeline
from gateway.runtime.registry import Registry
from gateway.runtime.service import Gateway
from gateway.runtime.spool import Spool


def pytest_configure(config):
    config.addinivalue_line("markers", "release: the release check (builds the sdist and the wheel, installs it "
                                       "into a new venv, runs the demo; minutes)")


class PipelineRig:
    """One node, `n1` with key `key`, registered with a pipeline whose spool lives in `data_dir`
    (10 s windows, no lateness). `make()` may be called again after `stop()`: the spool and the
    replay windows persist, as across a restart of the gateway."""

    node = "n1"
    key = bytes(32)

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir

    def frame(self, seq: int, value: float = 1.0, t: float = 1_700_000_000.0) -> bytes:
        """A COSE_Mac0 frame of node n1: one `temp` reading at time `t` (seconds)."""
        payload = cbor2.dumps([{-2: f"{self.node}/", -3: t, 0: "temp", 2: value}])
        return cose.mac0(self.key, self.node.encode(), payload, seq=seq)

    async def make(self, **spool):
        """(config, spool, pipeline, the pipeline's running task); inside a running loop.
        `spool`: [spool] settings (journal_bytes=0, say)."""
        cfg = from_dict({"gateway": {"data_dir": str(self.data_dir)}, "aggregate": {"widths": [10], "lateness": 0},
                         "spool": spool})
        reg = Registry()
        reg.add(self.node, self.key)
        spool = await Spool.open(cfg.spool_path, cfg.spool.journal_bytes)
        pipe = Pipeline(cfg, Ingest(reg, await spool.replay_windows()), spool, Metrics())
        task = asyncio.create_task(pipe.run())
        return cfg, spool, pipe, task

    @staticmethod
    async def stop(spool, task) -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await spool.close()


@pytest.fixture
def pipeline_rig(tmp_path) -> PipelineRig:
    """A pipeline rig over a spool in this test's temporary directory."""
    return PipelineRig(tmp_path)


class FrameSender:
    """A node in this process: authenticated frames offered to a gateway's pipeline as a
    transport offers them. `send` returns a future that is done, with (ack, error), once the
    pipeline has committed the frame: its readings have reached the rules, the aggregates and
    the node table by then."""

    def __init__(self, gw, name: str, key: bytes):
        self.gw, self.name, self.key, self.seq = gw, name, key, 100

    def send(self, **readings) -> asyncio.Future:
        items = list(readings.items())
        recs = [{-2: f"{self.name}/", -3: time.time(), 0: items[0][0], 2: float(items[0][1])}]
        recs += [{0: k, 2: float(v)} for k, v in items[1:]]
        self.seq += 1
        committed = asyncio.get_running_loop().create_future()

        def done(ack, err):
            if not committed.done():
                committed.set_result((ack, err))
        self.gw.pipeline.offer(cose.mac0(self.key, self.name.encode(), cbor2.dumps(recs), seq=self.seq), "sim", done)
        return committed


@pytest.fixture(scope="session")
def frame_sender():
    """FrameSender(gw, name, key): a node in this process (see FrameSender)."""
    return FrameSender


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def small_plant_gateway(tmp_path):
    """make(names) -> (Gateway, {name: key}): a gateway in this process with a spool in this
    test's temporary folder, the named nodes registered, no broker (its uplink is down), a
    status page on a free port, the rule pump1-hot (pump1/temp above 80), the resource mech1
    and the zones hall and pumps."""
    def make(names):
        registry = Registry(path=tmp_path / "nodes.toml")
        keys = {n: registry.add(n, transport="serial").key for n in names}
        registry.save()
        cfg = config.from_dict({
            "gateway": {"data_dir": str(tmp_path), "registry": str(registry.path)},
            "coap": {"enabled": False}, "mqtt": {"port": _free_port(), "reconnect_max": 1},  # no broker: down
            "http": {"port": 0},
            "rules": [{"name": "pump1-hot", "series": "pump1/temp", "above": 80, "severity": "critical"}],
            "resources": [{"id": "mech1", "capabilities": ["mechanic"], "home": [1, 2]}],
            "zones": {"points": {"hall": [0, 0], "pumps": [20, 10]}, "edges": [["hall", "pumps"]]},
        })
        return Gateway(cfg, registry), keys
    return make


def _sample_frames(n_frames=200):
    """Frames of three nodes with different sensors, relative times, text, booleans and data:
    (node, seq, received, SenML pack) each."""
    rng = random.Random(4)
    out = []
    for seq in range(n_frames):
        for node, sensors in (("pump1", ["temp", "vib"]), ("fork2", ["x", "y", "bat"]), ("tank3", ["level"])):
            t0 = 1_700_000_000 + seq * 0.25 + rng.random() * 1e-3
            recs = [{-2: f"{node}/", -3: t0, 0: sensors[0], 2: round(20 + rng.gauss(0, 1), 2)}]
            recs += [{0: sensors[i % len(sensors)], 6: i / 8, 2: round(rng.gauss(0, 3), 3)} for i in range(1, 8)]
            if seq % 10 == 0:
                recs += [{0: "state", 3: "running"}, {0: "door", 4: seq % 20 == 0}, {0: "blob", 8: b"\x00\x01"}]
            received = t0 + 0.05
            out.append((node, seq, received, cbor2.dumps(recs)))
    return out


@pytest.fixture(scope="session")
def sample_frames():
    """sample_frames(n=200): n frames of each of three nodes (see _sample_frames); the same every run."""
    return _sample_frames
