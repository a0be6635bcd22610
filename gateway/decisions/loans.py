"""Loans: the fleet's commands to a gateway, on `headrace/v1/<site>/<gateway>/cmd/_fleet`.

The cloud's fleet dispatcher (sink/fleet*.py) never commands a resource: it asks the
resource's own gateway to lend it, and tells the borrowing gateway how the loan goes.
Each message is a JSON object like a node command (`{"id", "cmd", "args"}`):

| cmd | at | args | effect |
|---|---|---|---|
| `lend` | the lender | `resource`, `gateway`, `demand`, `need`, `at`, `priority` (`zone`) | granted only if the resource is free now: a local demand (source `loan:<gateway>`) assigned to it at once, through the usual steps |
| `end_loan` | the lender | `gateway`, `demand` | the borrower no longer needs it: recalled, cancelled |
| `borrowed` | the borrower | `demand`, `gateway`, `resource` | the open demand is assigned to `<gateway>/<resource>` |
| `loan_step` | the borrower | `demand`, `state` (`accepted`, `done`, `ended`) | the lender's steps, mirrored; `ended` opens the demand again |

Every outcome is an event on `events`: at the lender `loan` (`granted`, `refused` with
`why`, `ended`), `demand` and `dispatch`; at the borrower `dispatch` (resource
`<gateway>/<id>`, `remote`) and `loan` (`refused` when the demand was no longer open,
so the cloud ends the loan at the lender). The answer on `cmd_result/_fleet` is
`queued` (taken) or `rejected` (malformed); whether a loan was granted is in the events.

Atomicity: `lend` runs on the event loop between two ticks of the gateway's dispatcher,
and checks and takes the resource in one synchronous step, so a resource is never
given to a local demand and lent at once (tests/gateway/test_fleet_loans.py races them).

Configuration: `[fleet] enabled = true` (gateway/config/fleet.py); when off, every fleet
command is rejected.
"""
from __future__ import annotations

import json
import math

from gateway.decisions.dispatch import ACCEPTED, ASSIGNED, DemandError, Dispatcher
from gateway.decisions.downlink import FLEET_TARGET, CommandError, Downlink
from gateway.protocol.names import NODE_NAME

__all__ = ["FLEET_TARGET", "LoanError", "Loans"]
_ARGS = {"lend": {"resource", "gateway", "demand", "need", "at", "priority", "zone"},
         "end_loan": {"gateway", "demand"},
         "borrowed": {"demand", "gateway", "resource"},
         "loan_step": {"demand", "state"}}


class LoanError(CommandError):
    """A malformed fleet command; the message says what is wrong and what is expected."""


def _name(args: dict, key: str) -> str:
    v = args.get(key)
    if not isinstance(v, str) or not NODE_NAME.match(v):
        raise LoanError(f"{key} must be a name (lowercase letters, digits, - or _), got {v!r}")
    return v


def _demand_id(args: dict) -> int:
    v = args.get("demand")
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise LoanError(f"demand must be a demand id (a positive whole number), got {v!r}")
    return v


class Loans:
    """Takes the fleet's commands and acts on the dispatcher; emits `loan` events."""

    def __init__(self, dispatcher: Dispatcher, emit, downlink: Downlink | None = None, metrics=None):
        """With a downlink, routes itself there: commands on cmd/_fleet come here."""
        self.dispatcher, self.emit, self.metrics = dispatcher, emit, metrics
        if downlink is not None:
            downlink.route_fleet(self.submit)

    def submit(self, payload: bytes) -> tuple[str, str]:
        """Validate and act on one fleet command; returns (id, cmd). LoanError when malformed."""
        if not self.dispatcher.fleet.enabled:
            raise LoanError("fleet commands are off on this gateway (fix: [fleet] enabled = true)")
        try:
            obj = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise LoanError(f"not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise LoanError('a fleet command is a JSON object: {"id": …, "cmd": …, "args": {…}}')
        cid, cmd, args = obj.get("id"), obj.get("cmd"), obj.get("args", {})
        if not isinstance(cid, str) or not 0 < len(cid) <= 64:
            raise LoanError("id must be a string of 1 to 64 characters")
        if cmd not in _ARGS:
            raise LoanError(f"unknown cmd {cmd!r}: use one of {', '.join(sorted(_ARGS))}")
        if not isinstance(args, dict):
            raise LoanError("args must be an object")
        extra = set(args) - _ARGS[cmd]
        if extra:
            raise LoanError(f"{cmd} takes no argument {sorted(extra)[0]!r} (it takes {', '.join(sorted(_ARGS[cmd]))})")
        getattr(self, "_" + cmd)(cid, args)
        if self.metrics is not None:
            self.metrics.inc("headrace_fleet_commands_total", cmd=cmd)
        return cid, cmd

    # -- at the lender --------------------------------------------------------------------

    def _lend(self, cid: str, args: dict) -> None:
        rid, gateway, demand = _name(args, "resource"), _name(args, "gateway"), _demand_id(args)
        need = _name(args, "need")
        at = args.get("at")
        if not (isinstance(at, list) and len(at) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in at)):
            raise LoanError(f"at must be [x, y] in site metres, got {at!r}")
        priority = args.get("priority", 5)
        if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 10:
            raise LoanError(f"priority must be a whole number from 1 to 10, got {priority!r}")
        zone = args.get("zone", "")
        event = {"type": "loan", "id": cid, "resource": rid, "gateway": gateway, "demand": demand,
                 "t": self.dispatcher.clock()}
        for d in self.dispatcher.demands.values():
            if d.loan == f"{gateway}/{demand}" and d.resource == rid:  # a repeat: granted already
                self.emit({**event, "state": "granted", "local": d.id})
                return
        try:
            d = self.dispatcher.lend(rid, gateway, demand, need, at, priority, zone if isinstance(zone, str) else "")
        except DemandError as exc:
            self.emit({**event, "state": "refused", "why": str(exc)})
            self._count("refused")
            return
        self.emit({**event, "state": "granted", "local": d.id})
        self._count("granted")

    def _end_loan(self, cid: str, args: dict) -> None:
        key = f"{_name(args, 'gateway')}/{_demand_id(args)}"
        for d in list(self.dispatcher.demands.values()):
            if d.loan == key:
                self.dispatcher.end_loan(d, "withdrawn")
                self._count("ended")

    # -- at the borrower ------------------------------------------------------------------

    def _borrowed(self, cid: str, args: dict) -> None:
        did, gateway, rid = _demand_id(args), _name(args, "gateway"), _name(args, "resource")
        d = self.dispatcher.demands.get(did)
        if d is not None and d.resource == f"{gateway}/{rid}":  # a repeat: borrowed already
            self.emit({"type": "loan", "id": cid, "state": "borrowed", "demand": did, "gateway": gateway,
                       "resource": rid, "t": self.dispatcher.clock()})
            return
        try:
            self.dispatcher.borrow(did, gateway, rid)
        except DemandError as exc:
            # served here meanwhile, or cancelled: the cloud ends the loan at the lender
            self.emit({"type": "loan", "id": cid, "state": "refused", "why": str(exc), "demand": did,
                       "gateway": gateway, "resource": rid, "t": self.dispatcher.clock()})
            self._count("refused")
            return
        self.emit({"type": "loan", "id": cid, "state": "borrowed", "demand": did, "gateway": gateway,
                   "resource": rid, "t": self.dispatcher.clock()})
        self._count("borrowed")

    def _loan_step(self, cid: str, args: dict) -> None:
        did, state = _demand_id(args), args.get("state")
        if state not in ("accepted", "done", "ended"):
            raise LoanError(f"state must be accepted, done or ended, got {state!r}")
        d = self.dispatcher.demands.get(did)
        if d is None or not d.remote or d.state not in (ASSIGNED, ACCEPTED):
            return  # a step repeated, or of a loan already over here: nothing to do
        if state == "accepted":
            self.dispatcher.accept(did)
        elif state == "done":
            self.dispatcher.done(did)
        else:
            self.dispatcher._reopen(d, "timeout", recall=False)  # the lender ended it: offered again

    def _count(self, state: str) -> None:
        if self.metrics is not None:
            self.metrics.inc("headrace_loans_total", state=state)
