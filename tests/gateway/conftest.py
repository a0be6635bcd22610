"""Fixtures shared by the gateway's tests: a real pipeline over a real SQLite spool, and the
node frames it takes. Test modules take these as fixtures; none imports another test module.

    def test_x(pipeline_rig):
        async def main():
            _, spool, pipe, task = await pipeline_rig.make()
            ...                                   # offer pipeline_rig.frame(seq) to pipe
            await pipeline_rig.stop(spool, task)
        asyncio.run(main())
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import cbor2
import pytest

from gateway.config import from_dict
from gateway.protocol import cose
from gateway.runtime.ingest import Ingest
from gateway.runtime.metrics import Metrics
from gateway.runtime.pipeline import Pipeline
from gateway.runtime.registry import Registry
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

    async def make(self):
        """(config, spool, pipeline, the pipeline's running task); inside a running loop."""
        cfg = from_dict({"gateway": {"data_dir": str(self.data_dir)}, "aggregate": {"widths": [10], "lateness": 0}})
        reg = Registry()
        reg.add(self.node, self.key)
        spool = await Spool.open(cfg.spool_path)
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
