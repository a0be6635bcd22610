"""The MQTT session's socket callbacks: paho calls them from the thread that runs connect
as well as from the loop; the loop's selector must only be touched on the loop's thread
(asyncio's selector is not thread-safe: a registration racing the loop's select failed
with "is already registered")."""
import asyncio
import socket
import threading

from gateway.config import from_dict
from gateway.runtime.uplink.mqtt import _Session


def test_socket_callbacks_from_another_thread_run_on_the_loop_in_order(tmp_path):
    cfg = from_dict({"gateway": {"data_dir": str(tmp_path), "id": "gw", "site": "s"}})

    async def main():
        loop = asyncio.get_running_loop()

        async def threadsafe_callbacks_ran():
            # the loop runs call_soon_threadsafe callbacks in order: one scheduled now runs
            # after every one the other thread scheduled before
            done = loop.create_future()
            loop.call_soon_threadsafe(done.set_result, None)
            await asyncio.wait_for(done, 5)

        s = _Session(cfg, loop, lambda mid: None, lambda: None)
        calls = []
        for name in ("add_reader", "add_writer", "remove_reader", "remove_writer"):
            real = getattr(loop, name)

            def record(sock, *args, _name=name, _real=real):
                calls.append((_name, threading.current_thread() is threading.main_thread()))
                return _real(sock, *args)
            setattr(loop, name, record)
        a, b = socket.socketpair()
        try:
            def paho_connecting():  # what paho does on the executor thread during connect
                s._sock_open(None, None, a)
                s._want_write(None, None, a)
                s._no_write(None, None, a)
            t = threading.Thread(target=paho_connecting)
            t.start()
            t.join()
            assert calls == []  # nothing touched the selector from that thread
            await threadsafe_callbacks_ran()
            assert calls == [("add_reader", True), ("add_writer", True), ("remove_writer", True)]
            s._want_write(None, None, a)  # on the loop's thread: at once
            assert calls[-1] == ("add_writer", True)
            s._sock_close(None, None, a)
            assert calls[-2:] == [("remove_reader", True), ("remove_writer", True)]
            # a socket closed before the loop got to register it is left alone
            c, d = socket.socketpair()
            t = threading.Thread(target=lambda: (s._sock_open(None, None, c), c.close(), s._sock_close(None, None, c)))
            t.start()
            t.join()
            n = len(calls)
            await threadsafe_callbacks_ran()
            assert ("add_reader", True) not in calls[n:]
            d.close()
        finally:
            a.close()
            b.close()

    asyncio.run(main())


def test_a_message_the_uplink_fails_on_is_logged_not_raised_into_paho(tmp_path, caplog):
    """An exception in the uplink's handling of a message (a bug) stays out of paho's read
    loop, whose reads and PUBACKs would stop behind it: it is logged with the topic."""
    import paho.mqtt.client as paho

    cfg = from_dict({"gateway": {"data_dir": str(tmp_path), "id": "gw", "site": "s"}})
    handled = []

    def broken(topic, payload):
        handled.append(topic)
        raise KeyError("boom")

    async def main():
        s = _Session(cfg, asyncio.get_running_loop(), lambda mid: None, lambda: None)
        s.on_command = broken
        msg = paho.MQTTMessage(topic=b"headrace/v1/s/gw/cmd/n1")
        msg.payload = b"{}"
        s.client.on_message(s.client, None, msg)  # as paho calls it
    asyncio.run(main())
    assert handled == ["headrace/v1/s/gw/cmd/n1"]
    assert "a message on headrace/v1/s/gw/cmd/n1 could not be handled" in caplog.text and "KeyError" in caplog.text
