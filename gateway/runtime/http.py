"""The gateway's HTTP listener: the status page and the status API.

Endpoints:
    GET /                        the status page (gateway/runtime/page/: HTML, live by Server-Sent Events)
    GET /status                  what the page shows, as JSON
    GET /status/stream           the page's Server-Sent Events (`state` every second, `ev` per event)
    GET /status/history?nodes=a,b  the sparkline samples of some nodes (JSON)
    GET /static/<file>           the page's script, style and vendored plot library
    GET /metrics                 Prometheus text
    GET /health                  JSON; 503 when a task of the gateway died
    GET /nodes                   the table of `headrace status` as JSON
    GET /demands, POST /demands, POST /demands/<id>/accept|decline|done|cancel
                                 the dispatcher (gateway/decisions/dispatch.py, docs/matching.md);
                                 a POST is answered once its change is in the spool (a kill -9
                                 after the answer loses nothing), 503 if the spool cannot take it
                                 within DURABLE_WAIT seconds
    GET /updates, POST /updates?nodes=a,b|*  (body: a release file), POST /updates/<node>/cancel
                                 node updates (gateway/runtime/updates.py; `headrace node update`)

Configuration (`[http]`): `bind` (loopback by default), `port` (0: off), `token`,
`tls_cert`, `tls_key`, `tls_client_ca`. With a token, every request needs it: as
`Authorization: Bearer <token>`, or from a browser the cookie the page sets when
opened once as `/?token=<token>`. With `tls_client_ca`, the TLS handshake admits
only clients whose certificate that CA signed. The configuration check refuses a
bind other than loopback with neither.

Usage: `StatusServer(cfg.http, gateway)`; `await start()`, `await stop()`.

Caveats: a deliberately tiny HTTP/1.0 server on asyncio streams (one request per
connection; a few endpoints need no framework). A token over plain HTTP crosses
the network in clear: set `tls_cert` and `tls_key` when binding beyond loopback.
Refused requests are counted (`headrace_http_refused_total`) and logged, rate-limited.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import urllib.parse
from dataclasses import dataclass, field

from gateway.runtime.logs import RateLimited

log = logging.getLogger("headrace.http")
MAX_BODY = 65536
DURABLE_WAIT = 10.0  # seconds a POST /demands waits for the commit of its change before a 503
MAX_RELEASE = 4 << 20  # POST /updates: a release file (the firmware's .mpy files are about 100 KB)
MAX_HEADERS = 64
COOKIE = "headrace_token"
_REASONS = {200: "OK", 201: "Created", 303: "See Other", 400: "Bad Request", 401: "Unauthorized",
            404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
            422: "Unprocessable Entity", 500: "Internal Server Error", 503: "Service Unavailable",
            507: "Insufficient Storage"}


@dataclass
class Request:
    method: str
    path: str
    query: dict
    headers: dict = field(default_factory=dict)  # lower-case names

    def cookie(self, name: str) -> str:
        for part in self.headers.get("cookie", "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
        return ""


@dataclass
class Response:
    code: int
    body: bytes = b""
    ctype: str = "application/json"
    headers: tuple = ()

    @classmethod
    def json(cls, code: int, obj) -> "Response":
        return cls(code, json.dumps(obj).encode())

    @classmethod
    def text(cls, code: int, text: str) -> "Response":
        return cls(code, text.encode(), "text/plain; charset=utf-8")


def tls_context(settings) -> ssl.SSLContext | None:
    """The server's TLS context from `[http] tls_cert`, `tls_key`, `tls_client_ca` (None: plain HTTP)."""
    if not settings.tls_cert:
        return None
    import ssl  # only with TLS: `ssl` maps OpenSSL's libcrypto, 3.5 MB resident (docs/performance.md, Memory)

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_client_ca:
        ctx.load_verify_locations(settings.tls_client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class StatusServer:
    """`settings` is the `[http]` section (or anything with bind, port, token and the tls keys)."""

    def __init__(self, settings, gateway):
        self.settings, self.gateway = settings, gateway
        self.bind, self.port = settings.bind, settings.port
        self._server: asyncio.base_events.Server | None = None
        self._warn = RateLimited(log)
        self.page = None
        if getattr(gateway, "pipeline", None) is not None:
            from gateway.runtime.page import StatusPage

            self.page = StatusPage(gateway)

    @property
    def url(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"{'https' if self.settings.tls_cert else 'http'}://{host}:{self.port}/"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.bind, self.port, ssl=tls_context(self.settings))
        self.port = self._server.sockets[0].getsockname()[1]
        if self.page is not None:
            await self.page.start()
        guard = ("token" if self.settings.token else "") + \
                (" and client certificates" if self.settings.tls_client_ca else "")
        log.info("status page on %s (%s)", self.url, f"{guard.strip(' and')} required" if guard else "open")

    async def stop(self) -> None:
        if self.page is not None:
            await self.page.stop()  # ends the event streams, so the connections close
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # -- one request ------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            req, length = await self._read_head(reader)
            if req is None:
                return
            refused = self._refused(req)
            if refused is not None:
                resp = refused
            elif req.path == "/status/stream" and req.method == "GET" and self.page is not None:
                await self.page.stream(writer)
                return
            elif length > (MAX_RELEASE if req.path == "/updates" else MAX_BODY):
                resp = Response.json(413, {"error": f"body over {MAX_RELEASE if req.path == '/updates' else MAX_BODY}"
                                                    " bytes"})
            else:
                body = await asyncio.wait_for(reader.readexactly(length), 5) if length else b""
                try:
                    resp = await self._route(req, body)
                except Exception:  # a bug: answer, and say where in the log
                    log.exception("%s %s failed", req.method, req.path)
                    resp = Response.text(500, "internal error: see the gateway's log\n")
            self._write(writer, resp)
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError, OSError):  # ssl.SSLError too
            pass
        finally:
            writer.close()

    async def _read_head(self, reader) -> tuple[Request | None, int]:
        line = await asyncio.wait_for(reader.readline(), 5)
        headers = {}
        for _ in range(MAX_HEADERS):
            header = await asyncio.wait_for(reader.readline(), 5)
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        parts = line.decode("latin-1").split()
        if len(parts) < 2:
            return None, 0
        url = urllib.parse.urlsplit(parts[1])
        query = dict(urllib.parse.parse_qsl(url.query))
        length = int(headers["content-length"]) if headers.get("content-length", "").isdigit() else 0
        return Request(parts[0], url.path, query, headers), length

    def _refused(self, req: Request) -> Response | None:
        """None when the request may go on; else the answer (401, or the redirect that sets the cookie)."""
        token = self.settings.token
        if not token:
            return None
        auth = req.headers.get("authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else req.cookie(COOKIE)
        if given and hmac.compare_digest(given.encode(), token.encode()):
            return None
        offered = req.query.get("token", "")
        if offered and req.method == "GET" and hmac.compare_digest(offered.encode(), token.encode()):
            # a browser opened the page with ?token=: keep it in a cookie, drop it from the address bar
            rest = urllib.parse.urlencode({k: v for k, v in req.query.items() if k != "token"})
            secure = "; Secure" if self.settings.tls_cert else ""
            return Response(303, b"", "text/plain", (("Location", req.path + (f"?{rest}" if rest else "")),
                                                     ("Set-Cookie", f"{COOKIE}={token}; Path=/; HttpOnly; "
                                                                    f"SameSite=Strict{secure}")))
        reason = "bad_token" if (given or offered) else "no_token"
        metrics = getattr(self.gateway, "metrics", None)
        if metrics is not None:
            metrics.inc("headrace_http_refused_total", reason=reason)
        self._warn.warning("refused", "refused %s %s: %s", req.method, req.path,
                           "wrong token" if reason == "bad_token" else "no token")
        return Response(401, b"a token is required: send 'Authorization: Bearer <token>' ([http] token), "
                             b"or open the page once as /?token=<token>\n", "text/plain",
                        (("WWW-Authenticate", 'Bearer realm="headrace"'),))

    async def _durable(self) -> bool:
        """Wait until what the decisions changed so far is committed (the ledger's open epoch);
        False after DURABLE_WAIT seconds. True at once without a ledger or with nothing changed."""
        ledger = getattr(self.gateway, "ledger", None)
        if ledger is None:
            return True
        done = asyncio.get_running_loop().create_future()
        ledger.after_marked(lambda: done.done() or done.set_result(None))
        try:
            await asyncio.wait_for(done, DURABLE_WAIT)
        except asyncio.TimeoutError:
            return False
        return True

    async def _route(self, req: Request, body: bytes) -> Response:
        path, gw, page = req.path, self.gateway, self.page
        if path == "/demands" or path.startswith("/demands/"):
            code, obj = gw.dispatcher.http(req.method, path, body)
            if req.method == "POST" and code < 300 and not await self._durable():
                log.warning("POST %s: the change is made but not yet in the spool after %g s (is the spool "
                            "failing? see its log lines); it is committed when the spool can write", path,
                            DURABLE_WAIT)
                return Response.json(503, {"error": f"made, but not yet in the spool after {DURABLE_WAIT:g} s: "
                                                    "check the gateway's spool (disk full or failing); the change "
                                                    "is committed when the spool can write", "made": obj})
            return Response.json(code, obj)
        if path == "/updates" or path.startswith("/updates/"):
            return self._updates(req, body)
        if req.method != "GET":
            return Response.text(405, "GET only here (POST goes to /demands and /updates)\n")
        if path == "/metrics":
            return Response(200, (await gw.render_metrics()).encode(), "text/plain; version=0.0.4")
        if path == "/health":
            health = gw.health()
            return Response.json(200 if health["ok"] else 503, health)
        if path == "/nodes":
            return Response.json(200, gw.node_table())
        if page is not None:
            if path in ("/", "/index.html"):
                return Response(200, await page.html(), "text/html; charset=utf-8", (("Cache-Control", "no-store"),))
            if path == "/status":
                return Response.json(200, await page.snapshot())
            if path == "/status/history":
                names = [n for n in req.query.get("nodes", "").split(",") if n]
                return Response.json(200, page.samples(names))
            if path.startswith("/static/"):
                asset = page.asset(path[len("/static/"):])
                if asset is not None:
                    return Response(200, asset[1], asset[0], (("Cache-Control", "max-age=3600"),))
        return Response.text(404, "try /, /status, /metrics, /health, /nodes or /demands\n")

    def _updates(self, req: Request, body: bytes) -> Response:
        """GET /updates: every delivery's progress; POST /updates?nodes=a,b (or nodes=*) with a
        release file as the body: queue it; POST /updates/<node>/cancel."""
        updates = getattr(self.gateway, "updates", None)
        if updates is None:
            return Response.json(409, {"error": "node updates are off on this gateway (fix: [update] public_key = "
                                                "the release.pub of your release key, then restart it)"})
        if req.method == "GET" and req.path == "/updates":
            return Response.json(200, updates.progress())
        if req.method == "POST" and req.path.endswith("/cancel"):
            node = req.path[len("/updates/"):-len("/cancel")]
            return Response.json(200 if updates.cancel(node) else 404, {"node": node})
        if req.method != "POST" or req.path != "/updates":
            return Response.text(405, "GET /updates, POST /updates?nodes=…, POST /updates/<node>/cancel\n")
        from gateway.tools.release import ReleaseError
        nodes = [n for n in req.query.get("nodes", "").split(",") if n]
        try:
            return Response.json(201, updates.queue(nodes, body))
        except ReleaseError as exc:
            return Response.json(422, {"error": f"release refused: {exc}", "reason": exc.reason})
        except ValueError as exc:
            return Response.json(400, {"error": str(exc)})
        except OSError as exc:  # counted and logged by updates.queue; nothing queued
            return Response.json(507, {"error": f"the gateway cannot keep the release: {exc.strerror or exc}; "
                                                "free space on the disk of its data_dir, then post it again"})

    @staticmethod
    def _write(writer: asyncio.StreamWriter, resp: Response) -> None:
        head = [f"HTTP/1.0 {resp.code} {_REASONS.get(resp.code, '')}", f"Content-Type: {resp.ctype}",
                f"Content-Length: {len(resp.body)}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in resp.headers]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + resp.body)
