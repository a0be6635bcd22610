"""Typed errors. Each carries the offending value and the counter reason it is filed under."""


class HeadraceError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(HeadraceError):
    """A configuration key is missing or wrong. `key` names it, `fix` says what to do."""

    def __init__(self, key: str, problem: str, fix: str = ""):
        self.key, self.problem, self.fix = key, problem, fix
        text = f"{key}: {problem}"
        if fix:
            text += f" (fix: {fix})"
        super().__init__(text)


class RejectedFrame(HeadraceError):
    """A message from a node that is not accepted. `reason` is the metrics label."""

    reason = "invalid"

    def __init__(self, detail: str, node: str | None = None, seq: int | None = None, key: bytes | None = None):
        self.detail, self.node, self.seq, self.key = detail, node, seq, key
        super().__init__(detail)


class FrameError(RejectedFrame):
    """Serial framing: bad COBS, bad CRC, oversize. Line noise: the node resends."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        super().__init__(detail)


class CoseError(RejectedFrame):
    """Not a well-formed COSE_Mac0 (structure, header, algorithm)."""

    reason = "cose"


class AuthError(RejectedFrame):
    """Unknown kid or bad MAC: an attack or a wrong key. Never acked."""

    reason = "auth"


class ReplayError(RejectedFrame):
    """A sequence number already seen, or older than the replay window. Acked as duplicate."""

    reason = "replay"


class PayloadError(RejectedFrame):
    """MAC valid, but the payload is not a valid SenML pack. Acked as rejected for good."""

    reason = "payload"


class SpoolError(HeadraceError):
    """The spool cannot commit (disk full, I/O error). Frames stay unacked; nodes resend."""
