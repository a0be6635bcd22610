"""Status API: `GET /metrics` (Prometheus text), `GET /health` (JSON), `GET /nodes` (JSON);
demands: `GET /demands`, `POST /demands` and `POST /demands/<id>/accept|decline|done|cancel`
(JSON, see gateway/decisions/dispatch.py and docs/matching.md).

A deliberately tiny HTTP/1.0 server on asyncio streams: a handful of endpoints
need no framework. Bound to loopback by default (`[http] bind`): it has no
authentication, so whoever reaches it may open demands.
"""
from __future__ import annotations

import asyncio
import json
import logging

log = logging.getLogger("headrace.http")
MAX_BODY = 65536
_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found", 409: "Conflict",
            413: "Payload Too Large", 422: "Unprocessable Entity", 503: "Service Unavailable"}


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
            length = 0
            while (header := await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                name, _, value = header.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length" and value.strip().isdigit():
                    length = int(value)
            parts = line.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else ""
            if len(parts) >= 2 and (path == "/demands" or path.startswith("/demands/")):
                if length > MAX_BODY:
                    code, obj = 413, {"error": f"body over {MAX_BODY} bytes"}
                else:
                    body = await asyncio.wait_for(reader.readexactly(length), 5) if length else b""
                    code, obj = self.gateway.dispatcher.http(parts[0], path, body)
                status, ctype = f"{code} {_REASONS.get(code, '')}", "application/json"
                body = json.dumps(obj).encode()
            elif len(parts) < 2 or parts[0] != "GET":
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
        except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
