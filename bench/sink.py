"""The sink's write path against COPY of the same rows already decoded, on a private PostgreSQL.

    python bench/sink.py [--batches 320] [--frames 256] [--group 16] [--rounds 3] [--server tuned|tests]
                         [--jetstream] [--waits]

Batches are made by the gateway's own encoder (`uplink/batch.py`): frames of 8
readings from 64 simulated nodes (values with 2-3 decimals, 10 ms apart, an hour
ago: in the current month's partition), `--frames` frames a batch as the
gateway's default `batch_records`. Three ways of putting them into one
`readings` table (the sink's own: partitioned by month, same keys and indexes),
interleaved for `--rounds` rounds on a fresh database each time:

- baseline: the rows decoded and put in key order beforehand (not timed), then `COPY readings FROM STDIN`
  (binary, as the sink's) in groups of `--group` batches, one transaction a group;
- 1 worker: the sink's own code from payload bytes (sink.decode.Decoder, then
  PostgresStore.write: the rows in key order, COPY into the table in a savepoint
  (staging and INSERT … ON CONFLICT only when a repeat is met: never here), the
  mirror upserts), one process;
- 2 workers: the same in two processes, each taking every other group (keep the
  number of groups even, or one worker has more to do: 320 batches in groups of 64
  split 192/128). Each worker process connects and checks the schema first; the
  clock starts once all have said they are ready.

Every other round runs in reverse order, and each run's database is dropped and
a checkpoint taken (untimed) before the next, so no autovacuum or writeback of
one run slows the next. Printed: readings/s of each (median of the rounds) and
the ratios; 2 workers / 1 worker also round by round; and the CPU time of the
clients and their PostgreSQL backends a reading (from /proc), whose ratio between
2 workers and 1 says whether the workers hinder each other (1.00: not at all)
regardless of how much of the machine they were given, and how much of the
machine everything else used meanwhile ("others": other processes, PostgreSQL's
background processes; on a shared machine what decides how much is left). Targets (DESIGN.md):
1 worker >= 0.5x the baseline, 2 workers >= 1.6x 1 worker. `--server tuned`
(the default) runs PostgreSQL with the settings docs/cloud.md gives for a sink's
database, all durable; `tests` as the test fixture does. With --jetstream the
workers are `headrace sink run`'s own loop (sink.service.Sink) pulling from one
durable consumer of a stream on a local NATS server that holds the batches,
timed from their start until every row is in PostgreSQL. The machine's cores are
shared with the PostgreSQL server (and whatever else runs): read ratios, not
absolute rates.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cbor2  # noqa: E402

from gateway.runtime.uplink import batch  # noqa: E402
from sink.decode import Decoder  # noqa: E402
from sink.store import COPY_TYPES, READING_COLS, SORT_KEY, PostgresStore  # noqa: E402

# the server: as hil_tests runs it (shared_buffers 64MB, so WAL buffers of 2MB), or with the settings
# docs/cloud.md gives for a sink's database (all durable: fsync and synchronous_commit stay on)
SERVER = {"tests": {}, "tuned": {"shared_buffers": "256MB", "wal_buffers": "64MB", "max_wal_size": "4GB",
                                 "checkpoint_timeout": "30min"}}
T0 = time.time() - 3600  # an hour ago: the rows land in the current month's partition, as live data does
SENSORS = ("temp", "vib", "pressure", "current", "humidity", "level", "flow", "rpm")


def make_batches(n: int, frames: int, nodes: int = 64, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    seqs = [0] * nodes
    out = []
    for b in range(n):
        bodies = []
        for f in range(frames):
            node = (b * frames + f) % nodes
            seqs[node] += 1
            t = T0 + seqs[node] * 0.08
            pack = [{-2: f"n{node}/", -3: t, 0: SENSORS[0], 2: round(rng.uniform(15, 30), 2)}]
            pack += [{0: s, 2: round(rng.uniform(0, 100), 3), 6: 0.01 * i} for i, s in enumerate(SENSORS[1:], 1)]
            bodies.append(batch.frame_body(f"n{node}", seqs[node], t + 0.05, cbor2.dumps(pack)))
        out.append(batch.encode("gw1", "s1", bodies, []))
    return out


def groups(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one by default), from /proc."""
    fields = Path(f"/proc/{pid or 'self'}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds all cores of the machine spent busy since boot (/proc/stat: all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def baseline(url: str, rows_by_group: list[list[tuple]]) -> tuple[float, float, float]:
    """(seconds, CPU seconds of this process and its PostgreSQL backend, CPU seconds of the whole
    machine) to COPY the rows."""
    import psycopg

    with psycopg.connect(url) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        cpu = cpu_seconds() + cpu_seconds(backend)
        busy = machine_busy()
        t = time.perf_counter()
        for rows in rows_by_group:
            with conn.transaction():
                with conn.cursor().copy(f"COPY readings ({', '.join(READING_COLS)}) FROM STDIN (FORMAT BINARY)") \
                        as copy:
                    copy.set_types(COPY_TYPES["readings"])
                    for r in rows:
                        copy.write_row(r)
        secs = time.perf_counter() - t
        return secs, cpu_seconds() + cpu_seconds(backend) - cpu, machine_busy() - busy


def worker(url: str, payload_groups: list[list[bytes]], ready, start, done) -> None:
    store = PostgresStore(url)
    backend = store.query("SELECT pg_backend_pid()")[0][0]
    dec = Decoder()
    ready.put(os.getpid())
    start.wait()
    cpu = cpu_seconds() + cpu_seconds(backend)
    for group in payload_groups:
        store.write([dec.decode("headrace/v1/s1/gw1/data", p) for p in group])
    cpu = cpu_seconds() + cpu_seconds(backend) - cpu
    store.close()
    done.put((time.perf_counter(), cpu))


class Waits:
    """What the workers' PostgreSQL backends were doing (--waits): pg_stat_activity sampled every
    20 ms from a thread of this process (the sampling takes some CPU from the run: compare runs
    with it on with each other only), and the WAL records and bytes written (pg_stat_wal)."""

    def __init__(self, url: str):
        import collections
        import threading

        self.url, self.counts, self.samples = url, collections.Counter(), 0
        self._stop, self._thread = threading.Event(), threading.Thread(target=self._sample)

    def _wal(self) -> tuple[int, int]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as c:
            records, size = c.execute("SELECT wal_records, wal_bytes FROM pg_stat_wal").fetchone()
        return int(records), int(size)

    def _sample(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as c:
            while not self._stop.is_set():
                for what, in c.execute(
                        "SELECT split_part(ltrim(query), ' ', 1) || ' ' || coalesce(wait_event_type || ':' "
                        "|| wait_event, 'on CPU') FROM pg_stat_activity WHERE backend_type = "
                        "'client backend' AND state = 'active' AND pid <> pg_backend_pid()"):
                    self.counts[what] += 1
                self.samples += 1
                time.sleep(0.02)

    def __enter__(self):
        self.wal = self._wal()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        after = self._wal()
        self.wal = (after[0] - self.wal[0], after[1] - self.wal[1])

    def report(self, readings: int) -> str:
        top = "; ".join(f"{what} {n / max(self.samples, 1):.0%}" for what, n in self.counts.most_common(6))
        return (f"    WAL {self.wal[0] / readings:.2f} records, {self.wal[1] / readings:.0f} bytes a reading; "
                f"backends (share of samples, summed over backends): {top}")


def run_workers(url: str, payload_groups: list[list[bytes]], n: int, waits: Waits | None = None
                ) -> tuple[float, float, float]:
    ctx = mp.get_context("fork")
    ready, start, done = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(url, payload_groups[i::n], ready, start, done)) for i in range(n)]
    for p in procs:
        p.start()
    for _ in procs:  # every worker connected and its schema checked (one after another: an advisory
        ready.get(timeout=120)  # lock), however loaded the machine: time the writes only
    if waits:
        waits.__enter__()
    busy = machine_busy()
    t = time.perf_counter()
    start.set()
    ends = [done.get(timeout=600) for _ in procs]
    busy = machine_busy() - busy
    if waits:
        waits.__exit__()
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"a worker failed with {p.exitcode}")
    return max(end for end, _cpu in ends) - t, sum(cpu for _end, cpu in ends), busy


def quiesce(pg, url: str) -> None:
    """Drop a run's database and checkpoint, untimed: no autovacuum of its tables and no dirty
    buffers of it are left to run during the next run (they made whichever came next slower)."""
    import psycopg

    with psycopg.connect(pg.url, autocommit=True) as c:
        c.execute(f'DROP DATABASE "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
        c.execute("CHECKPOINT")


def _jetstream_worker(url: str, servers: list[str], group: int) -> None:
    import asyncio

    from sink.config import from_dict
    from sink.service import Sink

    cfg = from_dict({"sink": {"database": url, "group": group},
                     "jetstream": {"servers": servers, "replicas": 1, "durable": "bench"}})
    asyncio.run(Sink(cfg).run())  # until terminated


def run_jetstream(url: str, servers: list[str], payloads: list[bytes], n: int, group: int) -> float:
    """The whole path: `payloads` stored in a fresh stream first, then `n` sink worker processes
    drain it through one durable consumer into PostgreSQL; seconds until every row is there."""
    import asyncio

    import nats

    from gateway.runtime.uplink.jetstream import ensure_stream

    async def fill():
        nc = await nats.connect(servers=servers)
        js = nc.jetstream()
        try:
            await js.delete_stream("HEADRACE")
        except Exception:
            pass
        await ensure_stream(js, "HEADRACE", replicas=1)
        for p in payloads:
            await js.publish("headrace.v1.s1.gw1.data", p)
        await nc.close()

    async def drained(procs) -> None:
        """Until the consumer's acknowledgement floor reaches the last message: the workers
        acknowledge after their commit, so every row is then in PostgreSQL. (Asking NATS, not
        counting rows: a count(*) every few milliseconds took CPU from the workers.)"""
        from nats.js.errors import NotFoundError

        nc = await nats.connect(servers=servers)
        js = nc.jetstream()
        try:
            while True:
                if any(p.exitcode for p in procs):
                    raise RuntimeError("a worker failed")
                try:
                    info = await js.consumer_info("HEADRACE", "bench")
                    if info.ack_floor.stream_seq >= len(payloads):
                        return
                except NotFoundError:  # the first worker has not made it yet
                    pass
                await asyncio.sleep(0.02)
        finally:
            await nc.close()

    asyncio.run(fill())
    ctx = mp.get_context("fork")
    t = time.perf_counter()
    procs = [ctx.Process(target=_jetstream_worker, args=(url, servers, group)) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        asyncio.run(drained(procs))
        return time.perf_counter() - t
    finally:
        for p in procs:
            p.terminate()
            p.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=320)
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--group", type=int, default=16, help="batches a transaction ([sink] group)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--server", choices=sorted(SERVER), default="tuned",
                    help="PostgreSQL settings: tuned for bulk writes (docs/cloud.md, Throughput), or as the tests run it")
    ap.add_argument("--jetstream", action="store_true",
                    help="workers read the batches from a JetStream stream (one local NATS server) first filled "
                         "with them, as `headrace sink run` does: broker included")
    ap.add_argument("--waits", action="store_true",
                    help="sample what the workers' PostgreSQL backends wait on, and count the WAL they write")
    a = ap.parse_args()
    from hil_tests.rig import Postgres

    payloads = make_batches(a.batches, a.frames)
    dec = Decoder()
    rows = [r for p in payloads for r in dec.decode("headrace/v1/s1/gw1/data", p).readings]
    n = len(rows)
    pgroups = groups(payloads, a.group)
    # the baseline's rows decoded and put in key order beforehand, untimed (the sink orders each group's
    # rows by key, which spares PostgreSQL work: the baseline gets that too)
    rgroups = [sorted((r for p in g for r in dec.decode("headrace/v1/s1/gw1/data", p).readings),
                      key=SORT_KEY["readings"]) for g in pgroups]
    print(f"{len(payloads)} batches of {a.frames} frames, {n} readings, {sum(map(len, payloads)) / n:.1f} "
          f"bytes a reading on the wire; {len(pgroups)} transactions of {a.group} batches")
    pg = Postgres(SERVER[a.server]).start()
    print(f"PostgreSQL settings: {a.server} ({', '.join(f'{k}={v}' for k, v in SERVER[a.server].items()) or 'as the tests'}); "
          f"load average {os.getloadavg()[0]:.1f}")
    names = ("baseline COPY", "sink, 1 worker", "sink, 2 workers")
    rates: dict[str, list[float]] = {k: [] for k in names}
    cpus: dict[str, list[float]] = {k: [] for k in names}
    cluster = None
    if a.jetstream:
        import tempfile

        from hil_tests.rig import NatsCluster

        cluster = NatsCluster(Path(tempfile.mkdtemp(prefix="headrace-bench-nats-")), size=1).start()
    try:
        for r in range(a.rounds):
            # every other round in reverse order: a load that drifts during a round favours none of them
            for name in (names if r % 2 == 0 else names[::-1]):
                url = pg.database(f"bench{r}_{name.split()[-1].replace(',', '')}_{len(rates[name])}")
                PostgresStore(url).close()  # the sink's schema (and this month's partitions), for the baseline too
                cpu = waits = None
                if name.startswith("baseline"):
                    secs, cpu, busy = baseline(url, rgroups)
                elif cluster is not None:
                    secs = run_jetstream(url, cluster.urls, payloads, 1 if "1 worker" in name else 2, a.group)
                else:
                    waits = Waits(url) if a.waits else None
                    secs, cpu, busy = run_workers(url, pgroups, 1 if "1 worker" in name else 2, waits)
                store = PostgresStore(url)
                stored = store.query("SELECT count(*) FROM readings")[0][0]
                store.close()
                assert stored == n, f"{name}: {stored} rows stored, {n} expected"
                quiesce(pg, url)
                rates[name].append(n / secs)
                note = ""
                if cpu is not None:
                    cpus[name].append(cpu / n * 1e6)
                    # "others": what the rest of the machine (other processes, PostgreSQL's own background
                    # processes, this bench's parent) used of the 2 cores meanwhile
                    note = (f"  {cpus[name][-1]:5.1f} CPU us a reading, {cpu / secs:4.2f} cores busy, "
                            f"others {max(busy - cpu, 0) / secs:4.2f}")
                print(f"round {r + 1}: {name:16s} {n / secs:12,.0f} readings/s{note}", flush=True)
                if waits:
                    print(waits.report(n), flush=True)
    finally:
        pg.close()
        if cluster is not None:
            cluster.stop()
    med = {k: statistics.median(v) for k, v in rates.items()}
    base, one, two = med["baseline COPY"], med["sink, 1 worker"], med["sink, 2 workers"]
    pairs = [b / o for o, b in zip(rates["sink, 1 worker"], rates["sink, 2 workers"])]
    print(f"\nmedian readings/s: baseline COPY {base:,.0f}, sink 1 worker {one:,.0f}, sink 2 workers {two:,.0f}"
          f" (load average now {os.getloadavg()[0]:.1f})")
    print(f"1 worker / baseline COPY: {one / base:.2f}x (target >= 0.5x)")
    print(f"2 workers / 1 worker:     {two / one:.2f}x (target >= 1.6x); by round: "
          f"{', '.join(f'{x:.2f}' for x in pairs)} (median {statistics.median(pairs):.2f}x)")
    if all(cpus.values()):
        c = {k: statistics.median(v) for k, v in cpus.items()}
        print(f"CPU a reading (median): baseline COPY {c['baseline COPY']:.1f} us, 1 worker {c['sink, 1 worker']:.1f} us, "
              f"2 workers {c['sink, 2 workers']:.1f} us: two workers cost {c['sink, 2 workers'] / c['sink, 1 worker']:.2f}x "
              f"the CPU of one a reading (1.00 = no contention between them); the ratio of rates above is "
              f"what the shared cores gave")

if __name__ == "__main__":
    main()
