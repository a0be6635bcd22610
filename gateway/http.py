"""Status API: `GET /metrics` (Prometheus text), `GET /health` (JSON), `GET /nodes` (JSON).

A deliberately tiny HTTP/1.0 server on asyncio streams: three read-only
endpoints need no framework. Bound to loopback by default (`[http] bind`).
"""
from __future__ import annotations

import asyncio
import json
import logging

log = logging.getLogger("headrace.http")


class StatusServer:
    def __init__(self, bind: str, port: int, gateway):
        self.bind, self.port, self.gateway = bind, port, gateway
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.bind, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("status API on http://%s:%d/metrics", self.bind, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else ""
            if len(parts) < 2 or parts[0] != "GET":
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == "/metrics":
                status, ctype = "200 OK", "text/plain; version=0.0.4"
                body = (await self.gateway.render_metrics()).encode()
            elif path == "/health":
                health = self.gateway.health()
                status = "200 OK" if health["ok"] else "503 Service Unavailable"
                ctype, body = "application/json", json.dumps(health).encode()
            elif path == "/nodes":
                status, ctype, body = "200 OK", "application/json", json.dumps(self.gateway.node_table()).encode()
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"try /metrics, /health or /nodes\n"
            writer.write(f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
