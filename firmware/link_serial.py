# Serial link: COBS/CRC frames to the gateway over a UART (a pty on the unix board).
import board
import cbor
import cose
import framing
import protocol


class SerialLink:
    window_default = 4

    def __init__(self, path, mac):
        self.port = board.Serial(path)
        self.mac = mac
        self.deframer = framing.Deframer()
        self.bad_acks = 0
        self.port.write(b"\x00")  # a delimiter first: the gateway resynchronises on it

    def send(self, seq, msg):
        self.port.write(framing.frame(msg))

    def poll(self, now):
        """Acks received since the last call: list of (seq, status, commands or None)."""
        acks = []
        data = self.port.read(512)
        while data:
            for msg in self.deframer.feed(data):
                ack = parse_ack(self.mac, msg)
                if ack is None:
                    self.bad_acks += 1
                else:
                    acks.append(ack)
            data = self.port.read(512)
        return acks

    def busy(self):
        return False


def parse_ack(mac, msg):
    """(seq, status, commands or None) from an authenticated gateway ack, or None if it
    is not one. Commands are [[id, cmd, args], ...] (docs/protocol.md §3)."""
    try:
        header, payload = cose.verify_mac0(mac, msg)
        if header.get(cose.HDR_KID) != protocol.GATEWAY_KID:
            return None
        body = cbor.loads(payload)
    except (ValueError, TypeError):
        return None
    if not isinstance(body, list) or len(body) not in (3, 4) or body[0] != protocol.MSG_ACK:
        return None
    cmds = body[3] if len(body) == 4 and isinstance(body[3], list) else None
    return body[1], body[2], cmds
