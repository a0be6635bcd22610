"""The uplinks' session loop (gateway/runtime/uplink/retry.py): back-off, reset, what ends it."""
import asyncio

import pytest

from gateway.runtime.uplink import retry


def run(script, monkeypatch, transient=lambda exc: False, reconnect_max=4.0, pick=lambda a, b: 1.0):
    """Drive keep_connected with `script`: a list of what each connect does ("ok" or an exception),
    pumps ending at once with ConnectionError; returns (waits, failures, teardowns, how it ended)."""
    waits, failures, teardowns = [], [], []
    steps = iter(script)

    async def fake_sleep(seconds):
        waits.append(seconds)

    monkeypatch.setattr(retry.random, "uniform", pick)
    monkeypatch.setattr(retry.asyncio, "sleep", fake_sleep)

    async def connect():
        step = next(steps, None)
        if step is None:
            raise asyncio.CancelledError
        if isinstance(step, BaseException):
            raise step

    async def pump():
        raise ConnectionError("broker closed the session")

    async def teardown():
        teardowns.append(1)

    async def main():
        try:
            await retry.keep_connected(connect, pump, reconnect_max=reconnect_max, transient=transient,
                                       failed=lambda exc, delay: failures.append((type(exc).__name__, delay)),
                                       teardown=teardown)
        except BaseException as exc:  # noqa: BLE001 - the test reports how the loop ended
            return type(exc).__name__
    return waits, failures, teardowns, asyncio.run(main())


def test_back_off_doubles_to_the_cap_and_starts_again_after_a_session(monkeypatch):
    refused = OSError("connection refused")
    waits, failures, teardowns, end = run([refused] * 5 + ["ok", refused], monkeypatch)
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 0.5, 1.0]
    assert [name for name, _ in failures] == ["OSError"] * 5 + ["ConnectionError", "OSError"]
    assert len(teardowns) == 8 and end == "CancelledError"  # teardown after the cancel too


def test_a_bug_ends_the_loop_and_a_transient_error_does_not(monkeypatch):
    *_, end = run([ValueError("a bug")], monkeypatch)
    assert end == "ValueError"
    waits, failures, _, end = run([KeyError("no responders")], monkeypatch, transient=lambda e: isinstance(e, KeyError))
    assert failures == [("KeyError", 0.5)] and waits == [0.5] and end == "CancelledError"


@pytest.mark.parametrize("end", [0, 1])
def test_waits_are_jittered_between_half_and_one_and_a_half_times(monkeypatch, end):
    waits, *_ = run([OSError(), OSError()], monkeypatch, pick=lambda a, b: (a, b)[end])
    assert waits == ([0.25, 0.5] if end == 0 else [0.75, 1.5])
