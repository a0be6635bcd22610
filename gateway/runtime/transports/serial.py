"""Serial transport: COBS/CRC frames over a UART (or a pty), one node per port.

Configuration: `[[serial.ports]]` tables with `path` and `baudrate`.
Usage: the service starts one `SerialLink` per configured port.
Node updates: a node fetches a release with CoAP block requests in serial frames
(docs/protocol.md §9), answered here by gateway/runtime/updates.py.
Caveats: a port that disappears (USB unplug) is reopened every few seconds; the
node resends what was not acked meanwhile. pyserial discards what arrived before
the port was opened: the first partial frame is counted as line noise.
"""
from __future__ import annotations

import asyncio
import logging

import serial
import serial_asyncio_fast

from gateway.errors import FrameError, RejectedFrame
from gateway.runtime.pipeline import Pipeline
from gateway.protocol.coap import CoapFormatError, is_update_request, parse
from gateway.protocol.framing import Deframer, encode_frame
from gateway.protocol.numbers import COAP_VERSION

log = logging.getLogger("headrace.serial")
TRANSPORT = "serial"
# Bytes buffered per port while the pipeline is full: beyond twice this the port stops
# being read and the line (then the node's outbox) holds the rest. asyncio's default
# (64 KiB, so 128 KiB a port, plus a 64 KiB read) lets 100 ports hold up to 19 MB;
# 8 KiB is still over half a second of a 115200 baud line.
READ_LIMIT = 8192


class SerialLink:
    """One serial port: read frames, offer them, write acks."""

    def __init__(self, path: str, baudrate: int, pipeline: Pipeline, reopen_delay: float = 2.0, updates=None):
        self.path, self.baudrate, self.pipeline = path, baudrate, pipeline
        self.updates = updates  # node updates: CoAP block requests in serial frames (gateway/runtime/updates.py)
        self.reopen_delay = reopen_delay
        self.connected = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._out = bytearray()  # acks of one commit group, written together

    async def run(self) -> None:
        """Open, serve, and reopen on loss, until cancelled."""
        while True:
            try:
                reader, writer = await serial_asyncio_fast.open_serial_connection(url=self.path, baudrate=self.baudrate,
                                                                              limit=READ_LIMIT)
            except (serial.SerialException, OSError) as exc:
                log.warning("cannot open serial port %s: %s; retrying in %.0f s", self.path, exc, self.reopen_delay)
                await asyncio.sleep(self.reopen_delay)
                continue
            _read_more(writer.transport)
            log.info("serial port %s open at %d baud", self.path, self.baudrate)
            self._writer = writer
            self.connected.set()
            try:
                await self._serve(reader)
            except (serial.SerialException, OSError) as exc:
                log.warning("serial port %s lost: %s; reopening", self.path, exc)
            finally:
                self.connected.clear()
                self._writer = None
                writer.close()
            await asyncio.sleep(self.reopen_delay)

    async def _serve(self, reader: asyncio.StreamReader) -> None:
        deframer = Deframer()
        pipeline = self.pipeline
        while True:
            writer = self._writer
            if writer is not None and writer.transport.get_write_buffer_size() > READ_LIMIT:
                await writer.drain()  # a node that does not read its acks is not read either
            data = await reader.read(READ_LIMIT)
            if not data:
                raise OSError("end of file")
            for item in deframer.feed(data):
                if isinstance(item, FrameError):
                    pipeline.reject_frame(item, TRANSPORT)
                    continue
                if self.updates is not None and item and item[0] >> 6 == COAP_VERSION:
                    self._update_request(item)  # a CoAP message (a COSE_Mac0 starts 0xd1): a node fetching an update
                    continue
                await pipeline.wait_space()
                try:
                    pipeline.offer(item, TRANSPORT, self._reply)
                except RejectedFrame:
                    pass  # counted and logged by the pipeline; never acked

    def _update_request(self, message: bytes) -> None:
        try:
            mtype, code, mid, token, options, _ = parse(message)
        except CoapFormatError as exc:
            self.pipeline.reject_frame(FrameError("coap", f"malformed CoAP message on {self.path}: {exc}"), TRANSPORT)
            return
        if not is_update_request(options):
            self.pipeline.reject_frame(FrameError("coap", f"CoAP request on {self.path} for another path than /u"),
                                       TRANSPORT)
            return
        delay, msg = self.updates.coap(mtype, code, mid, token, options)
        frame = encode_frame(msg)
        if delay > 0:  # throttled: the answer waits
            asyncio.get_running_loop().call_later(min(delay, 1.5), self._write_now, frame)
        else:
            self._write_now(frame)

    def _write_now(self, data: bytes) -> None:
        if self._writer is not None:
            self._writer.write(data)

    def _reply(self, ack: bytes | None, error: Exception | None) -> None:
        if ack is None or self._writer is None:
            return  # spool failed: no ack, the node resends
        if not self._out:
            # a commit acks many frames at once: one write for all of them (a tty write costs a syscall)
            asyncio.get_running_loop().call_soon(self._flush)
        self._out += encode_frame(ack)

    def _flush(self) -> None:
        data, self._out = bytes(self._out), bytearray()
        if self._writer is not None and data:
            self._writer.write(data)


def _read_more(transport: asyncio.BaseTransport) -> None:
    """Let the transport read up to READ_LIMIT bytes a call. pyserial-asyncio-fast reads
    1 KiB at a time (`_max_read_size`, no public setter), so a busy line costs one
    select and one read every 1 KiB; where the attribute is missing, its default stays."""
    if hasattr(transport, "_max_read_size"):
        transport._max_read_size = READ_LIMIT
