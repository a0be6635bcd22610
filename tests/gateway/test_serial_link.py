"""The serial transport on a real pty: read size, a burst of frames in order, line noise
counted, acks written back framed."""
import asyncio
import os
import tty

from gateway.protocol.framing import Deframer, encode_frame
from gateway.runtime.transports import serial as serial_transport


class Recorder:
    """The pipeline's side of the link: frames offered, rejects counted, acks at once."""

    def __init__(self):
        self.offered = []
        self.rejected = []

    async def wait_space(self):
        return None

    def offer(self, message, transport, done):
        self.offered.append(message)
        done(b"ack:" + message[:4], None)

    def reject_frame(self, exc, transport):
        self.rejected.append(exc)


def write_all(fd, data):
    while data:  # a pty takes a few KB at a time
        data = data[os.write(fd, data):]


def test_a_burst_of_frames_is_read_in_large_chunks_and_acked():
    async def main():
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        pipeline = Recorder()
        link = serial_transport.SerialLink(os.ttyname(slave), 115200, pipeline, reopen_delay=0.1)
        task = asyncio.create_task(link.run())
        try:
            await asyncio.wait_for(link.connected.wait(), 5)
            # pyserial-asyncio-fast reads 1 KiB a call unless told otherwise
            assert link._writer.transport._max_read_size == serial_transport.READ_LIMIT
            frames = [b"%04d" % i + bytes(150) for i in range(200)]  # about 31 KB in one write
            burst = b"\x00\x01\x02\x03\x00" + b"".join(encode_frame(f) for f in frames)
            writing = asyncio.create_task(asyncio.to_thread(write_all, master, burst))
            for _ in range(500):
                if len(pipeline.offered) == len(frames):
                    break
                await asyncio.sleep(0.01)
            await writing
            assert pipeline.offered == frames
            assert len(pipeline.rejected) == 1  # the noise before the first frame
            acks = []
            deframer = Deframer()
            os.set_blocking(master, False)
            for _ in range(500):
                try:
                    acks += [a for a in deframer.feed(os.read(master, 65536)) if isinstance(a, bytes)]
                except BlockingIOError:
                    pass
                if len(acks) == len(frames):
                    break
                await asyncio.sleep(0.01)
            assert acks == [b"ack:" + f[:4] for f in frames]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            os.close(master)
            os.close(slave)

    asyncio.run(main())
