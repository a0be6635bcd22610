"""The pipeline: one owner for everything between a transport and the spool.

Transports `offer()` messages. Verified frames wait in a bounded queue for the
next group commit; the committer writes each group in one SQLite transaction
(readings + replay windows), and only then calls each frame's `done` with its
ack. While one commit runs, the next group gathers, so a slow disk makes the
groups bigger, not the gateway slower. Readings reach the aggregates after the
commit, so a frame that is resent after a failed commit is counted once.

Configuration: `[spool] commit_interval` is the commit window: a commit starts
at least that long after the one before (0.025 s by default: at most 40 fsyncs
a second, and a frame's ack waits at most that plus one commit), so at a few
hundred frames a second each commit carries several frames instead of one
(less CPU per frame and fewer bytes written to flash). `ack_wait` (0.04 s) lets
the window grow past it while the window and twice the time a group takes to be
read and committed (measured, a decaying maximum) stay within it: at low rates,
where a commit's cost is mostly fixed, about 25 commits a second instead of 37;
at a few thousand frames a second the groups take longer and the window stays
`commit_interval`. `commit_max_frames`
bounds a group; the queue holds eight groups, then transports are told to wait. When
a full group is waiting at the end of a commit, the gateway is behind: the next
commit starts at once, without the window (which would otherwise cap the rate at
`commit_max_frames / commit_interval`, 20,480 frames a second at the defaults), and
`headrace_spool_commits_behind_total` counts it.

While the commit window runs, a transport may stop reading (`add_intake(pause,
take, listen)`): what arrives meanwhile waits in the kernel and is read in one go
just before the next commit, so at a few hundred frames a second the event loop
wakes once a commit instead of once a frame. The acks go out no later: nothing of
a group is acked before its commit. A transport left unread stays so through the
commit that follows (what comes then joins the group after it either way) and is
read as data comes only once there is nothing left to commit: at a steady low
rate it is never put back in the event loop's read set, which cost uvloop a
handle made and closed, several `epoll_ctl` calls and a turn of the loop a commit.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from core_ext.aggregate import Aggregator

from gateway.config import Config
from gateway.errors import PayloadError, RejectedFrame, ReplayError, SpoolError
from gateway.runtime.ingest import CMD_RECORD, UPDATE_RECORD, Ingest, command_reports, update_reports
from gateway.runtime.logs import RateLimited
from gateway.runtime.metrics import Metrics
from gateway.protocol.numbers import ACK_DUPLICATE, ACK_REJECTED, ACK_STORED
from gateway.runtime.spool import KIND_EVENT, KIND_FRAME, KIND_WINDOW, Spool
from gateway.runtime.uplink import batch

log = logging.getLogger("headrace.pipeline")

Done = Callable[[bytes | None, Exception | None], None]


@dataclass(slots=True)
class _Item:
    """A frame waiting for its commit: an accepted one has its payload (SenML), the time it
    was received and how many numeric readings went to the parser's columns (what
    `Ingest.check` gives as an `Accepted`, kept here without a second object a frame)."""

    transport: str
    done: Done
    status: int
    node: str
    seq: int
    key: bytes
    payload: bytes | None = None  # None: not accepted (a duplicate or a rejected payload), acked only
    received: float = 0.0
    count: int = 0


@dataclass(slots=True)
class NodeStatus:
    """What the status view shows per node."""

    frames: int = 0
    readings: int = 0
    rejected: int = 0
    last_seen: float = 0.0
    transport: str = ""
    last_rows: tuple | None = None  # the newest frame's rows in the committed columns
    minute: int = 0  # the current minute (since the epoch) and the frames in it and in the one before
    this_minute: int = 0
    last_minute: int = 0
    causes: dict = field(default_factory=dict)  # rejected frames by reason (the metrics' label)
    seen_key: tuple | None = None  # its headrace_node_last_seen_seconds series (Metrics.key)

    def count(self, now: float, frames: int = 1) -> None:
        """`frames` more frames at `now`."""
        m = int(now // 60)
        if m != self.minute:
            self.last_minute = self.this_minute if m == self.minute + 1 else 0
            self.this_minute, self.minute = 0, m
        self.this_minute += frames

    def rate(self, now: float | None = None) -> float:
        """Frames a second over the last minute (the one before, weighted by what is left of it)."""
        now = time.time() if now is None else now
        m, frac = int(now // 60), (now % 60) / 60
        if m == self.minute:
            return (self.this_minute + self.last_minute * (1 - frac)) / 60
        if m == self.minute + 1:
            return self.this_minute * (1 - frac) / 60
        return 0.0


class CommitSignal(asyncio.Event):
    """Set after each commit, as an asyncio.Event; it also calls the callbacks given to
    `listen()` then, so an uplink can decide on the spot whether a commit is worth waking
    its pump (at a few hundred frames a second most are not: the batch delay runs)."""

    def __init__(self):
        super().__init__()
        self._listeners: list[Callable[[], None]] = []

    def listen(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def set(self) -> None:
        super().set()
        for callback in self._listeners:
            callback()


class Pipeline:
    def __init__(self, cfg: Config, ingest: Ingest, spool: Spool, metrics: Metrics, *, rules=None, downlink=None,
                 events=None, ledger=None):
        """`rules` (a RuleEngine) gets the committed readings and the closed windows; `downlink`
        (a Downlink) gives the commands that ride the acks and takes the nodes' reports;
        `events` (an EventSink) has its events committed with the next group; `ledger` (a
        gateway.decisions.ledger.Ledger) has the decisions' changed rows committed with them."""
        self.cfg, self.ingest, self.spool, self.metrics = cfg, ingest, spool, metrics
        self._in_keys: dict[str, tuple] = {}  # transport -> its frames-in counter's key
        self.nodes: dict[str, NodeStatus] = {}
        self.committed = CommitSignal()  # set after each commit; the uplink waits on it or listens
        self._pending: list[_Item] = []
        self._windows: list[bytes] = []
        self._events: list[bytes] = []  # rule and dispatcher events for the next commit (never dropped)
        self.rules, self.downlink = rules, downlink
        self.updates = None  # node updates (gateway/runtime/updates.py) take the nodes' `update` records
        if events is not None:
            events.route(self.add_event)
        self._wake = asyncio.Event()
        self.ledger = ledger
        if ledger is not None:
            ledger.route(self._wake.set)
        self._space = asyncio.Event()
        self._space.set()
        self._max_pending = cfg.spool.commit_max_frames * 8
        self._aggs = [Aggregator(w, cfg.aggregate.lateness, cfg.aggregate.max_open, cfg.aggregate.late_policy)
                      for w in cfg.aggregate.widths]
        self._late_seen = 0
        self._carry = None  # parsed columns of frames queued behind the group being committed
        self._cycle = 0.0  # a group's intake and commit, seconds: a decaying maximum (window())
        self._last_nodes: set = set()  # the nodes of the group committed last
        self._back_to_back = False  # a node of that group was in the one before it as well (window())
        self.last_window = 0.0  # seconds: the window after the last commit
        self._intake: list[tuple[Callable[[], None], Callable[[], None], Callable[[], None]]] = []
        self._warn = RateLimited(log)

    # -- intake ---------------------------------------------------------------------------

    def has_space(self) -> bool:
        """False while the commit queue is full (a datagram transport answers 'busy')."""
        return self._space.is_set()

    async def wait_space(self) -> None:
        """Back-pressure for transports: wait while the commit queue is full."""
        await self._space.wait()

    def add_intake(self, pause: Callable[[], None], take: Callable[[], None], listen: Callable[[], None]) -> None:
        """`pause()` is called when a commit window starts (the transport may stop reading),
        `take()` when it ends, before the next group is taken (the transport reads what waits
        and offers it; it need not read on), `listen()` when nothing is left to commit (the
        transport reads as data comes, until the next `pause()`)."""
        self._intake.append((pause, take, listen))

    def offer(self, message: bytes, transport: str, done: Done) -> None:
        """Take one message from a node. `done(ack, None)` is called after the commit, or
        `done(None, SpoolError)` if it failed. Raises CoseError/AuthError (and FrameError
        never reaches here): those are never acked, the transport decides how to answer."""
        key = self._in_keys.get(transport)
        if key is None:
            key = self._in_keys[transport] = self.metrics.key("headrace_frames_in_total", transport=transport)
        self.metrics.add(key)
        now = time.time()
        try:
            node, seq, mkey, payload, count = self.ingest.verify(message, now)
        except (ReplayError, PayloadError) as exc:
            self._reject(exc, transport)
            status = ACK_DUPLICATE if isinstance(exc, ReplayError) else ACK_REJECTED
            self._enqueue(_Item(transport, done, status, exc.node, exc.seq, exc.key))
            return
        except RejectedFrame as exc:
            self._reject(exc, transport)
            raise
        # the reports' markers looked for here, not by a call a frame: nearly no frame has one
        if self.downlink is not None and CMD_RECORD in payload:
            for text in command_reports(node, payload):
                self.downlink.result(node, text)
        if self.updates is not None and UPDATE_RECORD in payload:
            for text in update_reports(node, payload):
                self.updates.report(node, text)
        self._enqueue(_Item(transport, done, ACK_STORED, node, seq, mkey, payload, now, count))

    def reject_frame(self, exc: RejectedFrame, transport: str) -> None:
        """Count and log a message a transport rejected before it reached `offer` (framing)."""
        self.metrics.inc("headrace_frames_in_total", transport=transport)
        self._reject(exc, transport)

    def _reject(self, exc: RejectedFrame, transport: str) -> None:
        self.metrics.inc("headrace_frames_rejected_total", transport=transport, reason=exc.reason)
        if exc.node and exc.node in self.nodes:
            st = self.nodes[exc.node]
            st.rejected += 1
            st.causes[exc.reason] = st.causes.get(exc.reason, 0) + 1
        self._warn.warning(exc.reason, "rejected %s frame (%s): %s", transport, exc.reason, exc)

    def _enqueue(self, item: _Item) -> None:
        self._pending.append(item)
        if len(self._pending) >= self._max_pending:
            self._space.clear()
        self._wake.set()

    # -- commit ---------------------------------------------------------------------------

    async def run(self) -> None:
        """The committer and the window closer; runs until cancelled."""
        helpers = [asyncio.create_task(self._close_windows(), name="window-closer"),
                   asyncio.create_task(self._enforce_quota(), name="spool-quota")]
        try:
            await self._commit_loop()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    async def _commit_loop(self) -> None:
        sp = self.cfg.spool
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                taken = time.monotonic()  # when the group's intake began
                while self._pending or self._windows or self._events or self._ledger_dirty():
                    started = time.monotonic()
                    await self._commit_group()
                    now = time.monotonic()
                    window = self.last_window = self.window(sp.commit_interval, sp.ack_wait, now - taken,
                                                            self._back_to_back)
                    for pause, _take, _listen in self._intake:
                        pause()
                    left = window - (now - started)
                    if len(self._pending) >= sp.commit_max_frames:
                        # a full group waits: the gateway is behind, and the window would only cap
                        # its rate at a group a window; the next commit starts at once
                        self.metrics.inc("headrace_spool_commits_behind_total")
                        left = 0
                    if left > 0:
                        await asyncio.sleep(left)
                    taken = time.monotonic()
                    for _pause, take, _listen in self._intake:
                        take()
                for _pause, _take, listen in self._intake:
                    listen()
        finally:  # cancelled: the transports read on as before, for a drain or until they stop
            for _pause, _take, listen in self._intake:
                listen()

    def window(self, interval: float, ack_wait: float, cycle: float, back_to_back: bool = False) -> float:
        """The next commit window, seconds from this commit's start to the next one's: at least
        `interval`, longer while the window plus twice a group's intake and commit (`cycle`, kept
        as a decaying maximum: a slow one shortens the windows at once, for a while) stays within
        `ack_wait`. A frame that comes just after a window ends waits through that group's cycle,
        the window and its own group's cycle: at a few hundred frames a second a cycle takes a
        millisecond or two, and the longer window means fewer commits (their cost is mostly fixed).
        Not while a node sends `back_to_back` (in two groups in a row: draining its outbox, or
        sampling fast): a CoAP node has one request out at a time, so each window is a wait for
        each of its frames, and a longer one would slow it below its own rate."""
        self._cycle = cycle if cycle > self._cycle else self._cycle * 0.9
        if interval <= 0:
            return 0.0  # no window: each commit as soon as the last one ends
        if back_to_back:
            return interval
        return max(interval, ack_wait - 2 * self._cycle)

    async def _commit_group(self) -> None:
        n = self.cfg.spool.commit_max_frames
        group, self._pending = self._pending[:n], self._pending[n:]
        windows, self._windows = self._windows, []
        events, self._events = self._events, []
        if len(self._pending) < self._max_pending:
            self._space.set()
        records = [(KIND_FRAME, batch.frame_body(i.node, i.seq, i.received, i.payload))
                   for i in group if i.payload is not None]
        records += [(KIND_WINDOW, body) for body in windows]
        records += [(KIND_EVENT, body) for body in events]
        nodes: set[str] = set()  # the group's nodes, for window()
        fresh: set[str] = set()  # those with a frame that is not a duplicate, whose replay state moved
        for i in group:
            nodes.add(i.node)
            if i.status != ACK_DUPLICATE:
                fresh.add(i.node)
        self._back_to_back = not nodes.isdisjoint(self._last_nodes)
        self._last_nodes = nodes
        replay = self.ingest.dirty_state(fresh)
        # taken in the same turn of the loop as the events: the rows describe what they did
        epoch, decisions = self.ledger.take() if self.ledger is not None else (0, None)
        try:
            await self.spool.commit(records, replay, decisions)
        except SpoolError as exc:
            self._events[:0] = events  # events wait for the next commit
            if self.ledger is not None:
                self.ledger.failed(decisions)
            self._commit_failed(group, exc)
            return
        if self.ledger is not None:
            self.ledger.committed(epoch)  # the downlink may now send the commands this commit recorded
        self.ingest.committed(replay)
        self.metrics.inc("headrace_spool_commits_total")
        self.metrics.inc("headrace_windows_total", len(windows))
        self._readings_committed(group)
        if self._ledger_dirty():
            await self._commit_effects()
        # while no command waits for any node (nearly always), no node is asked for its commands
        downlink = self.downlink if self.downlink is not None and not self.downlink.idle() else None
        ack = self.ingest.ack
        for item in group:
            commands = downlink.for_ack(item.node) if downlink is not None and item.node else ()
            item.done(ack(item.key, item.seq, item.status, commands), None)
        self.committed.set()

    async def _commit_effects(self) -> None:
        """What the group's readings changed in the decisions (a node's accept or done moving a
        dispatch on), and the events of it, committed before the group's acks: a node's report is
        acked only once its effect is durable, so a crash cannot keep the report and lose the step."""
        events, self._events = self._events, []
        epoch, decisions = self.ledger.take()
        try:
            await self.spool.commit([(KIND_EVENT, body) for body in events], {}, decisions)
        except SpoolError as exc:
            self._events[:0] = events  # they go with the next commit; the frames are durable already
            self.ledger.failed(decisions)
            self._warn.warning("spool", "%s; the decisions' changes wait for the next commit", exc)
            return
        self.ledger.committed(epoch)
        self.metrics.inc("headrace_spool_commits_total")

    def _commit_failed(self, group: list[_Item], exc: SpoolError) -> None:
        # Nothing of this group is durable. Fail it and everything queued behind it, and
        # forget their replay marks first, so the nodes' resends are accepted as new.
        self.metrics.inc("headrace_spool_errors_total")
        self._warn.warning("spool", "%s; %d frames not acked, nodes will resend", exc, len(group) + len(self._pending))
        failed, self._pending = group + self._pending, []
        self._space.set()
        self.ingest.rollback()
        self.ingest.parser.take()  # their parsed readings go too: the resends bring them again
        self._carry = None
        for item in failed:
            item.done(None, exc)

    def _readings_committed(self, group: list[_Item]) -> None:
        """After the commit: the group's readings go to the aggregates; status and metrics."""
        n = sum(i.count for i in group if i.payload is not None)
        sids, ts, vs = self._take_columns(n)
        for agg in self._aggs:
            agg.add_columns(sids, ts, vs)
        now = time.time()
        if self.rules is not None:
            self.rules.readings(sids, ts, vs, now)
        row = payload = 0
        # the metrics once a transport and a node a group, not a frame (a labelled update costs
        # about half a microsecond), and a node's frame counts and time once a group: the same
        # values, and label sets met in the same order
        by_transport: dict[str, int] = {}
        frames_of: dict[str, int] = {}  # node -> its frames in the group, in the order first met
        nodes = self.nodes
        for item in group:
            if item.payload is None:
                continue
            payload += len(item.payload)
            node = item.node
            st = nodes.get(node)
            if st is None:
                st = nodes[node] = NodeStatus()
            frames_of[node] = frames_of.get(node, 0) + 1
            st.readings += item.count
            st.transport = item.transport
            by_transport[item.transport] = by_transport.get(item.transport, 0) + 1
            row += item.count
            st.last_rows = (sids, ts, vs, row - item.count, row)  # resolved lazily by the status view
        metrics = self.metrics
        for transport, frames in by_transport.items():
            metrics.inc("headrace_frames_accepted_total", frames, transport=transport)
        for node, frames in frames_of.items():
            st = nodes[node]
            st.frames += frames
            st.count(now, frames)
            st.last_seen = now
            if st.seen_key is None:
                st.seen_key = metrics.key("headrace_node_last_seen_seconds", node=node)
            metrics.put(st.seen_key, now)
        metrics.inc("headrace_readings_total", n)
        metrics.inc("headrace_payload_bytes_total", payload)  # the nodes' SenML, against the uplink's bytes

    def _take_columns(self, n: int):
        """The first n rows of parsed columns; the rest (frames queued behind this group) stay."""
        parser = self.ingest.parser
        sids, ts, vs, _other = parser.take()
        if self._carry is not None:
            c_sids, c_ts, c_vs = self._carry
            sids, ts, vs = c_sids + sids, c_ts + ts, c_vs + vs
            self._carry = None
        if len(sids) > n:
            self._carry = (sids[n:], ts[n:], vs[n:])
            sids, ts, vs = sids[:n], ts[:n], vs[:n]
        return sids, ts, vs

    def node_last(self, node: str) -> dict:
        """sensor -> (time, value) of the newest committed frame of a node."""
        st = self.nodes.get(node)
        if st is None or st.last_rows is None:
            return {}
        sids, ts, vs, a, b = st.last_rows
        names = self.ingest.parser.names
        return {names[sids[i]]: (ts[i], vs[i]) for i in range(a, b)}

    def replace_rules(self, rules) -> None:
        """A reloaded rule table (SIGHUP) takes the readings from the next commit on."""
        self.rules = rules

    def _ledger_dirty(self) -> bool:
        return self.ledger is not None and self.ledger.dirty

    def add_event(self, body: bytes) -> None:
        """Spool an event record with the next commit."""
        self._events.append(body)
        self._wake.set()

    # -- spool overflow policy ---------------------------------------------------------

    async def _enforce_quota(self) -> None:
        sp = self.cfg.spool
        ttl = {KIND_FRAME: sp.ttl_frames, KIND_WINDOW: sp.ttl_windows, KIND_EVENT: sp.ttl_events}
        while True:
            await asyncio.sleep(sp.check_interval)
            try:
                dropped = await self.spool.enforce(sp.max_bytes, ttl)
            except SpoolError as exc:
                self._warn.warning("spool", "spool overflow check failed: %s", exc)
                continue
            for (kind, reason), n in dropped.items():
                self.metrics.inc("headrace_spool_dropped_total", n, kind=kind, reason=reason)
                self._warn.warning(f"drop-{kind}-{reason}",
                                   "spool %s: dropped %d oldest %s records (uplink down too long? raise [spool] "
                                   "max_bytes or the TTL)", "over quota" if reason == "quota" else "TTL passed",
                                   n, kind)

    # -- windows --------------------------------------------------------------------------

    async def _close_windows(self, period: float = 1.0) -> None:
        while True:
            await asyncio.sleep(period)
            self.close_windows(time.time())

    def close_windows(self, watermark: float, flush: bool = False) -> int:
        """Close due windows into spool records (committed with the next group)."""
        names = self.ingest.parser.names
        n = 0
        for width, agg in zip(self.cfg.aggregate.widths, self._aggs):
            cols = agg.flush() if flush else agg.close(watermark)
            if self.rules is not None and not flush:  # a flushed window is cut short: no rule judges it
                self.rules.windows(width, cols)
            for i in range(len(cols["sid"])):
                self._windows.append(batch.window_body(names[cols["sid"][i]], width, *(
                    cols[f][i] for f in ("start", "count", "min", "max", "sum", "sumsq", "first", "last", "twa",
                                         "correction"))))
                n += 1
        late = sum(a.late for a in self._aggs)
        if late != self._late_seen:
            self.metrics.inc("headrace_late_readings_total", late - self._late_seen)
            self._late_seen = late
        if n:
            self._wake.set()
        return n

    async def drain(self, timeout: float = 10.0) -> None:
        """On shutdown: flush open windows and commit what is queued."""
        self.close_windows(time.time(), flush=True)
        deadline = time.monotonic() + timeout
        while (self._pending or self._windows or self._events or self._ledger_dirty()) and time.monotonic() < deadline:
            await self._commit_group()
