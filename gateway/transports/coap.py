"""CoAP transport: `POST /d` with a COSE_Mac0 (Content-Format 17), over UDP (aiocoap).

Configuration: `[coap] enabled, bind, port`.
Usage: nodes send confirmable POSTs; the 2.04 response carries the ack and is
sent only after the spool commit. Error codes as in docs/protocol.md §5.
Caveats: aiocoap handles deduplication of retransmitted CON messages within
its EXCHANGE_LIFETIME; the gateway's replay window covers the rest.
"""
from __future__ import annotations

import asyncio
import logging

import aiocoap
import aiocoap.resource as resource
from aiocoap.numbers.codes import Code

from ..errors import AuthError, CoseError, FrameError
from ..pipeline import Pipeline
from ..protocol.numbers import CF_COSE_MAC0, MAX_MESSAGE

log = logging.getLogger("headrace.coap")
TRANSPORT = "coap"


class DataResource(resource.Resource):
    """`/d`: readings from nodes."""

    def __init__(self, pipeline: Pipeline):
        super().__init__()
        self.pipeline = pipeline

    async def render_post(self, request):
        pipeline = self.pipeline
        payload = request.payload
        if len(payload) > MAX_MESSAGE:
            pipeline.reject_frame(FrameError("oversize", f"CoAP payload of {len(payload)} bytes exceeds {MAX_MESSAGE}"),
                                  TRANSPORT)
            return aiocoap.Message(code=Code.REQUEST_ENTITY_TOO_LARGE)
        await pipeline.wait_space()
        fut = asyncio.get_running_loop().create_future()

        def done(ack, error):
            if not fut.done():
                fut.set_result((ack, error))

        try:
            pipeline.offer(payload, TRANSPORT, done)
        except AuthError:
            return aiocoap.Message(code=Code.UNAUTHORIZED)
        except CoseError:
            return aiocoap.Message(code=Code.BAD_REQUEST)
        ack, error = await fut
        if ack is None:
            return aiocoap.Message(code=Code.SERVICE_UNAVAILABLE, payload=str(error).encode()[:200])
        return aiocoap.Message(code=Code.CHANGED, payload=ack, content_format=CF_COSE_MAC0)


class CoapServer:
    """Owns the aiocoap server context."""

    def __init__(self, bind: str, port: int, pipeline: Pipeline):
        self.bind, self.port, self.pipeline = bind, port, pipeline
        self._ctx: aiocoap.Context | None = None

    async def start(self) -> None:
        root = resource.Site()
        root.add_resource(["d"], DataResource(self.pipeline))
        self._ctx = await aiocoap.Context.create_server_context(root, bind=(self.bind, self.port))
        log.info("CoAP listening on %s:%d", self.bind, self.port)

    async def stop(self) -> None:
        if self._ctx is not None:
            await self._ctx.shutdown()
            self._ctx = None
