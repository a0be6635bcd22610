"""Access to the status page and API: the [http] token, TLS client certificates, and the
configuration check that refuses a bind beyond loopback with neither."""
from __future__ import annotations

import asyncio
import ssl

import pytest

from gateway import config
from gateway.decisions.dispatch import Dispatcher
from gateway.errors import ConfigError
from gateway.runtime.http import StatusServer
from gateway.runtime.metrics import Metrics
from gateway.tools import cli

TOKEN = "s3cret-token-of-24-chars"


class SmallGateway:
    def __init__(self):
        cfg = config.from_dict({"resources": [{"id": "mech1", "capabilities": ["mechanic"], "home": [0, 0]}]})
        self.events, self.metrics = [], Metrics()
        self.dispatcher = Dispatcher(cfg, self.events.append)

    def health(self):
        return {"ok": True, "uplink_connected": False, "nodes": 0, "uptime_s": 1.0}

    def node_table(self):
        return []


async def _request(port, method, path, headers=None, body=b"", ssl_ctx=None):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl_ctx)
    head = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(f"{method} {path} HTTP/1.0\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body)
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head.decode(), body


def test_token_is_required_for_the_api_and_the_page(tmp_path):
    async def main():
        gw = SmallGateway()
        server = StatusServer(config.HttpSection(port=0, token=TOKEN), gw)
        await server.start()
        p = server.port
        try:
            code, head, body = await _request(p, "GET", "/health")
            assert code == 401 and "WWW-Authenticate: Bearer" in head and b"token" in body
            code, _, _ = await _request(p, "POST", "/demands", body=b'{"need": "mechanic", "at": [1, 2]}')
            assert code == 401 and gw.events == []  # refused: no demand was opened
            assert (await _request(p, "GET", "/health", {"Authorization": "Bearer wrong-token-wrong-token"}))[0] == 401
            assert gw.metrics.get("headrace_http_refused_total", reason="no_token") == 2
            assert gw.metrics.get("headrace_http_refused_total", reason="bad_token") == 1
            auth = {"Authorization": f"Bearer {TOKEN}"}
            assert (await _request(p, "GET", "/health", auth))[0] == 200
            code, _, _ = await _request(p, "POST", "/demands", auth, b'{"need": "mechanic", "at": [1, 2]}')
            assert code == 201 and [e["type"] for e in gw.events][:1] == ["demand"]
            # a browser opens /?token=… once: a cookie keeps the token, the address loses it
            code, head, _ = await _request(p, "GET", f"/?token={TOKEN}&x=1")
            assert code == 303 and "Location: /?x=1" in head
            assert f"Set-Cookie: headrace_token={TOKEN}; Path=/; HttpOnly; SameSite=Strict" in head
            assert (await _request(p, "GET", "/health", {"Cookie": f"a=b; headrace_token={TOKEN}"}))[0] == 200
            assert (await _request(p, "GET", "/health", {"Cookie": "headrace_token=nope"}))[0] == 401
            assert (await _request(p, "GET", "/?token=nope"))[0] == 401
        finally:
            await server.stop()

    asyncio.run(main())


def test_tls_client_certificate_is_required(tmp_path):
    from hil_tests.rig import make_tls

    tls = make_tls(tmp_path)

    async def main():
        server = StatusServer(config.HttpSection(port=0, tls_cert=tls["server_cert"], tls_key=tls["server_key"],
                                                 tls_client_ca=tls["ca"]), SmallGateway())
        await server.start()
        try:
            assert server.url.startswith("https://")
            anonymous = ssl.create_default_context(cafile=tls["ca"])
            try:  # TLS 1.3: the server's refusal arrives after the client's handshake, at the first read
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=anonymous)
                writer.write(b"GET /health HTTP/1.0\r\n\r\n")
                answer = await asyncio.wait_for(reader.read(), 10)
                writer.close()
            except (ssl.SSLError, ConnectionError):
                answer = b""
            assert answer == b""  # no HTTP answer without a client certificate
            client = ssl.create_default_context(cafile=tls["ca"])
            client.load_cert_chain(tls["client_cert"], tls["client_key"])
            code, _, body = await _request(server.port, "GET", "/health", ssl_ctx=client)
            assert code == 200 and b'"ok": true' in body
        finally:
            await server.stop()

    asyncio.run(main())


@pytest.mark.parametrize("http, problem", [
    ({"bind": "0.0.0.0"}, "neither a token nor client certificates"),
    ({"bind": "192.168.1.20", "token": "short"}, "at least 16"),
    ({"bind": "plant-gw.local"}, "reachable from the network"),
    ({"tls_client_ca": "/etc/hostname"}, "client certificates need TLS"),
    ({"tls_cert": "/etc/hostname"}, "needs its key"),
    ({"tls_cert": "/nonexistent.pem", "tls_key": "/nonexistent.key"}, "does not exist"),
])
def test_config_refuses_unguarded_or_broken_access(http, problem):
    with pytest.raises(ConfigError) as exc:
        config.from_dict({"http": http})
    assert problem in str(exc.value) and "[http] " in str(exc.value)


@pytest.mark.parametrize("http", [{}, {"bind": "::1"}, {"bind": "localhost"}, {"bind": "0.0.0.0", "port": 0},
                                  {"bind": "0.0.0.0", "token": TOKEN}])
def test_config_accepts_loopback_or_guarded_access(http):
    assert config.from_dict({"http": http}).http.bind == http.get("bind", "127.0.0.1")


def test_check_config_refuses_a_network_bind_without_a_token(tmp_path, capsys):
    (tmp_path / "nodes.toml").write_text("")
    path = tmp_path / "gateway.toml"
    path.write_text(f'[gateway]\nregistry = "{tmp_path / "nodes.toml"}"\n[http]\nbind = "0.0.0.0"\n')
    assert cli.main(["gateway", "check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "[http] bind" in err and "token" in err and "fix:" in err
    path.write_text(path.read_text() + f'token = "{TOKEN}"\n')
    assert cli.main(["gateway", "check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out  # valid, with advice: the token would cross the network in clear
    assert ": OK" in out and "warning: [http] bind = '0.0.0.0' with a token over plain HTTP" in out


def test_the_command_line_sends_the_token_of_its_config(tmp_path, capsys):
    path = tmp_path / "gateway.toml"
    path.write_text(f'[http]\ntoken = "{TOKEN}"\n')
    bare = tmp_path / "bare.toml"
    bare.write_text("")

    async def main():
        gw = SmallGateway()
        server = StatusServer(config.HttpSection(port=0, token=TOKEN), gw)
        await server.start()
        base = f"http://127.0.0.1:{server.port}"
        try:
            assert await asyncio.to_thread(cli.main, ["status", "--config", str(path), "--url", base]) == 0
            assert "0 nodes seen" in capsys.readouterr().out
            assert await asyncio.to_thread(cli.main, ["status", "--config", str(bare), "--url", base]) == 1
            assert "401" in capsys.readouterr().err
            rc = await asyncio.to_thread(cli.main, ["demand", "mechanic", "--at", "1,2", "--config", str(path),
                                                    "--url", base])
            assert rc == 0 and "open: mechanic" in capsys.readouterr().out
            rc = await asyncio.to_thread(cli.main, ["demand", "mechanic", "--at", "1,2", "--config", str(bare),
                                                    "--url", base])
            assert rc == 1 and "refused: 401 Unauthorized: a token is required" in capsys.readouterr().err
        finally:
            await server.stop()

    asyncio.run(main())
