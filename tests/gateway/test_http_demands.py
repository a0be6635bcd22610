"""POST /demands on the status server and `headrace demand`, against a dispatcher in this process."""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

from gateway.tools import cli
from gateway import config
from gateway.decisions.dispatch import Dispatcher
from gateway.runtime.http import StatusServer


class FakeGateway:
    def __init__(self):
        cfg = config.from_dict({"resources": [{"id": "mech1", "capabilities": ["mechanic"], "home": [0, 0]}],
                                "zones": {"points": {"pumps": [20, 10]}}})
        self.events = []
        self.dispatcher = Dispatcher(cfg, self.events.append)


def post(url, body: bytes):
    req = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


def test_demands_over_http_and_the_cli(capsys):
    async def main():
        gw = FakeGateway()
        server = StatusServer(config.HttpSection(port=0), gw)
        await server.start()
        base = f"http://127.0.0.1:{server.port}"
        try:
            code, d = await asyncio.to_thread(post, base + "/demands", b'{"need": "mechanic", "zone": "pumps"}')
            assert code == 201 and d["at"] == [20.0, 10.0] and d["state"] == "open"
            code, err = await asyncio.to_thread(post, base + "/demands", b'{"need": "welder", "at": [1, 2]}')
            assert code == 422 and "welder" in err["error"]
            code, d2 = await asyncio.to_thread(post, base + f"/demands/{d['id']}/cancel", b"")
            assert code == 200 and d2["state"] == "cancelled"
            rc = await asyncio.to_thread(cli.main, ["demand", "mechanic", "--at", "3,4", "--priority", "9",
                                                    "--url", base])
            assert rc == 0
            assert "open: mechanic at (3, 4), priority 9" in capsys.readouterr().out
            rc = await asyncio.to_thread(cli.main, ["demand", "forklift", "--at", "3,4", "--url", base])
            assert rc == 1 and "refused: no resource has the capability 'forklift'" in capsys.readouterr().err
            assert await asyncio.to_thread(cli.main, ["demand", "mechanic", "--at", "3", "--url", base]) == 2
            view = await asyncio.to_thread(get, base + "/demands")
            assert [x["priority"] for x in view["demands"]] == [9]
            assert [e["type"] for e in gw.events] == ["demand", "dispatch", "demand"]  # the cancel, the CLI's
        finally:
            await server.stop()

    asyncio.run(main())
