"""Fixtures of the simulated bench: real mosquitto, socat ptys, the gateway process, MicroPython nodes."""
from __future__ import annotations

import pytest

from .bench import Mosquitto, PtyPair, Subscriber


@pytest.fixture
def mosquitto(tmp_path):
    broker = Mosquitto(tmp_path).start()
    yield broker
    broker.stop()


@pytest.fixture
def subscriber(mosquitto):
    sub = Subscriber(mosquitto.port)
    yield sub
    sub.close()


@pytest.fixture
def pty_pairs(tmp_path):
    made = []

    def make(name: str) -> PtyPair:
        pair = PtyPair(tmp_path, name)
        made.append(pair)
        return pair

    yield make
    for pair in made:
        pair.stop()
