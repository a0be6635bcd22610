"""headrace against the peer gateways, side by side: the same load, interleaved runs, one broker count.

    python bench/peers.py [--peers thingsboard,nodered] [--rates 100,500,1000,2000,...] [--duration S]
                          [--transports serial,coap] [--tb-storage sqlite,memory] [--quick] [--out FILE]

Peers run as their harnesses in ../shared/peers/ do (their own `run_peer.sh`,
load generator, broker, subscriber and accounting), each in a private mount
namespace whose overlay keeps what the harness writes (its venv/ or
node_modules/, runs/, results.jsonl) in --state-dir. headrace gets the same
load (devices, sensors, values, rate) as authenticated frames over serial ptys
and CoAP from bench/peer_load.py, with its durable defaults, and a subscriber
checks and times every reading at a private mosquitto. Runs alternate
(headrace, peer, headrace, …) from the lowest rate up; a gateway stops at its
first rate with loss; runs disturbed by other processes, or by the hypervisor
(STEAL_LIMIT % of the machine's time or more given to other guests during the
load, or over the whole run where the load's own is not measured, unless
--steal-ok), are retried and left out. At every rate where both
delivered everything, the CPU each gateway spent per delivered message is
compared (headrace ÷ peer; targets ≤ 0.5× Node-RED's and ≤ 0.25× ThingsBoard's).
Method and figures: docs/performance.md. Progress on stderr, JSON lines to --out,
tables with ratios headrace/peer on stdout.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.peer_load import READINGS_PER_MESSAGE, MachineLoad, foreign_limit, log, run_headrace  # noqa: E402

KEEP_UP_P99_MS = 2000.0
# % of the machine's time the hypervisor gave to other guests during a run's load (steal, /proc/stat): past
# it the run is disturbed, whichever gateway ran. Loss follows steal closely on a shared host
# (peers/nodered/README.md): at 25 % steal a gateway that is whole at 0 % falls seconds behind.
STEAL_LIMIT = 5.0
TB_VERSION = "thingsboard-gateway==3.8.5"  # thingsboard/README.md
PEER_LOAD = {"thingsboard": "thingsboard", "nodered": "nodered"}
QUICK = {"duration": 5.0, "rates": "500,2000,10000,20000", "quiet": 30.0, "retries": 0, "drain": 15.0}


class PeerUnavailable(Exception):
    """A peer that cannot be installed or run on this machine; the message says why."""


# -- peers: the harnesses in place, writes going to an overlay ----------------------------------

class PeerHarness:
    """One harness folder, run through `unshare --mount` with an overlay over it."""

    def __init__(self, name: str, peers_dir: Path, state_dir: Path):
        self.name, self.folder = name, peers_dir / name
        self.upper, self.work = state_dir / name / "upper", state_dir / name / "work"
        self.overlay = True

    def run(self, argv: list[str], timeout: float, env: dict | None = None,
            own_pids: bool = False) -> subprocess.CompletedProcess:
        """`own_pids`: in a PID namespace of its own (with its own /proc), where the harness sees
        no other process, so its busy-machine check never gives up (`--busy-ok`)."""
        if self.overlay:
            script = ('mount -t overlay overlay -o lowerdir="$1",upperdir="$2",workdir="$3" "$1" && cd "$1" '
                      '&& shift 3 && exec "$@"')
            pid_ns = ["--pid", "--fork", "--mount-proc"] if own_pids else []
            argv = ["unshare", "--mount", *pid_ns, "--propagation", "private", "--", "bash", "-c", script, "bash",
                    str(self.folder), str(self.upper), str(self.work), *argv]
        return subprocess.run(argv, cwd=self.folder, capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, **(env or {})))

    def path(self, rel: str) -> Path:
        """Where a file the harness wrote lies, seen from outside its namespace."""
        return (self.upper if self.overlay else self.folder) / rel

    def prepare(self) -> None:
        if not self.folder.is_dir():
            raise PeerUnavailable(f"no harness at {self.folder}")
        self.upper.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        try:
            ok = self.run(["true"], 30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if not ok:
            if not os.access(self.folder, os.W_OK):
                raise PeerUnavailable(f"cannot overlay {self.folder} (needs root for unshare and mount) and it is "
                                      "not writable: the harness writes its install and runs beside itself")
            self.overlay = False
            log(f"{self.name}: no overlay possible, running the harness in place (it writes into {self.folder})")
        if self.name == "thingsboard":
            self._install_thingsboard()
        else:
            self._install_nodered()

    def _install(self, what: str, cmd: str, timeout: float) -> None:
        log(f"{self.name}: installing {what} as its README says ({cmd})")
        try:
            r = self.run(["bash", "-c", cmd], timeout)
        except subprocess.TimeoutExpired:
            raise PeerUnavailable(f"installing {what} took over {timeout:.0f} s") from None
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
            raise PeerUnavailable(f"`{cmd}` failed (exit {r.returncode}): {' | '.join(tail)}")

    def _install_thingsboard(self) -> None:
        if not self.path("venv/bin/thingsboard-gateway").exists():
            self._install(TB_VERSION, f"python3 -m venv venv && ./venv/bin/pip install -q {TB_VERSION}", 1800)
        require_debian("mosquitto", "mosquitto")

    def _install_nodered(self) -> None:
        node = shutil.which("node")
        if node is None or shutil.which("npm") is None:
            raise PeerUnavailable("Node.js and npm are not installed (apt-get install nodejs npm; Node-RED 4 needs "
                                  "Node >= 18)")
        major = int(subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()[1:].split(".")[0])
        if major < 18:
            raise PeerUnavailable(f"Node.js {major} is too old for Node-RED 4.1.8 (needs >= 18)")
        require_debian("mosquitto_sub", "mosquitto-clients")
        if not self.path("node_modules/node-red/red.js").exists():
            self._install("node-red 4.1.8 from package-lock.json", "npm ci --no-audit --no-fund", 1800)


def require_debian(binary: str, package: str) -> None:
    if shutil.which(binary) or os.path.exists(f"/usr/sbin/{binary}"):
        return
    if os.geteuid() != 0:
        raise PeerUnavailable(f"`{binary}` is missing: apt-get install {package}")
    log(f"installing the Debian package {package} (the harness needs {binary})")
    cmd = f"apt-get install -y -qq --no-install-recommends {package} || (apt-get update -qq && " \
          f"apt-get install -y -qq --no-install-recommends {package})"
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if r.returncode != 0 or not shutil.which(binary):
        raise PeerUnavailable(f"`{binary}` is missing and apt-get install {package} failed")


def run_thingsboard(h: PeerHarness, storage: str, rate: float, o) -> dict:
    res = {"gateway": "thingsboard", "transport": f"mqtt/{storage}", "load": "thingsboard"}
    rundir = Path(tempfile.mkdtemp(prefix="tb-run-"))
    argv = ["./run_peer.sh", "--mode", "mqtt", "--storage", storage, "--rate", f"{rate:g}", "--duration",
            f"{o.duration:g}", "--drain", f"{o.drain:g}", "--wait-quiet", f"{o.quiet:g}", "--rundir", str(rundir),
            "--json"]
    try:
        p = h.run(argv, o.quiet + o.duration + o.drain + 240)
        r = json.loads(p.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        return {**res, "error": f"run_peer.sh gave no result: {exc}", "clean": False}
    finally:
        if not o.keep:
            shutil.rmtree(rundir, ignore_errors=True)
    if "error" in r:
        return {**res, "error": r["error"], "clean": False, "harness": r}
    return {**res, "sent": r["sent"], "delivered": r["delivered"], "duplicates": r["duplicate_msgs"],
            "achieved_rate": None, "cpu_pct": r["cpu_pct_send"], "rss_idle_mb": r["rss_mb_start"],
            "rss_peak_mb": r["hwm_mb"], "lat_p50_ms": r["lat_ms_p50"], "lat_p99_ms": r["lat_ms_p99"],
            "lat_max_ms": r["lat_ms_max"], "foreign_cpu_pct": r["foreign_cpu_pct_send"],
            "clean": r["foreign_cpu_pct_send"] < foreign_limit(o), "harness": r}


def run_nodered(h: PeerHarness, rate: float, o, ml: MachineLoad) -> dict:
    """One run of the Node-RED harness. With --busy-ok it runs in a PID namespace of its own: its
    check for other processes sees none and never aborts, and what the rest of the machine used
    during the run is measured from outside (`foreign_cpu_pct`, over the harness's whole run)."""
    res = {"gateway": "nodered", "transport": "udp", "load": "nodered"}
    results = h.path("results.jsonl")
    before = results.read_text().count("\n") if results.exists() else 0
    env = {"WAIT_QUIET": f"{o.quiet:g}", "MIN_DRAIN": f"{o.min_drain:g}"}
    if o.busy_ok:
        env["WAIT_QUIET"] = "0"
    outside = ml.snap("nodered_start") if o.busy_ok else None
    try:
        p = h.run(["./run_peer.sh", str(int(rate)), f"{o.duration:g}"], o.quiet + o.duration + 200, env,
                  own_pids=o.busy_ok and h.overlay)
    except subprocess.TimeoutExpired:
        return {**res, "error": "run_peer.sh timed out", "clean": False}
    lines = results.read_text().splitlines()[before:] if results.exists() else []
    if not lines:
        if p.returncode == 10:
            return {**res, "clean": False, "aborted": p.stdout.strip()[-300:]}
        return {**res, "error": f"run_peer.sh exit {p.returncode}: {(p.stderr or p.stdout).strip()[-300:]}",
                "clean": False}
    r = json.loads(lines[-1])
    if not o.keep and r.get("run_dir", "").startswith(str(h.folder)):
        shutil.rmtree(h.path(os.path.relpath(r["run_dir"], h.folder)), ignore_errors=True)
    foreign = r["foreign_cpu_pct"] if outside is None else ml.foreign(outside, ml.snap("nodered_end"))
    return {**res, "sent": r["sent"], "delivered": min(r["delivered"], r["sent"]), "duplicates": r["dup"],
            "achieved_rate": r["achieved_rate"], "cpu_pct": r["nr_cpu_load_pct"], "rss_idle_mb": r["nr_rss_idle_mb"],
            "rss_peak_mb": r["nr_rss_peak_mb"], "lat_p50_ms": r["lat_p50_ms"], "lat_p99_ms": r["lat_p99_ms"],
            "lat_max_ms": r["lat_max_ms"], "foreign_cpu_pct": foreign, "clean": r["clean"] or o.busy_ok,
            "udp_rcvbuf_drops": r["udp_rcvbuf_drops"], "harness": r}


# -- the schedule, the verdicts and the tables -----------------------------------------------

def zero_loss(r: dict) -> bool:
    if r.get("error") or not r.get("sent"):
        return False
    return (r["delivered"] >= r["sent"] and not r.get("bad_frames") and r["lat_p99_ms"] is not None
            and r["lat_p99_ms"] <= KEEP_UP_P99_MS
            and (r.get("achieved_rate") is None or r["achieved_rate"] >= 0.95 * r["rate"]))


def streams_for(peer: str, o) -> tuple[list, list]:
    """(headrace streams, peer streams) for one peer's load; a stream is (gateway, transport, load)."""
    ours = [("headrace", t, PEER_LOAD[peer]) for t in o.transports]
    if peer == "thingsboard":
        theirs = [("thingsboard", f"mqtt/{s}", "thingsboard") for s in o.tb_storage]
    else:
        theirs = [("nodered", "udp", "nodered")]
    return ours, theirs


def interleave(a: list, b: list) -> list:
    out = []
    for i in range(max(len(a), len(b))):
        out += a[i:i + 1] + b[i:i + 1]
    return out


def one_run(stream, rate: float, o, ml: MachineLoad, harnesses: dict) -> dict:
    gateway, transport, load = stream
    before = ml.snap("steal_start")
    try:
        if gateway == "headrace":
            r = run_headrace(load, transport, rate, o, ml)
        elif gateway == "thingsboard":
            r = run_thingsboard(harnesses[gateway], transport.split("/")[1], rate, o)
        else:
            r = run_nodered(harnesses[gateway], rate, o, ml)
    except Exception as exc:  # a failed run is a result too: say what went wrong and go on
        r = {"gateway": gateway, "transport": transport, "load": load, "error": f"{type(exc).__name__}: {exc}",
             "clean": False}
    r.update(rate=rate, duration=o.duration, time=time.strftime("%Y-%m-%dT%H:%M:%S"))
    r["zero_loss"] = zero_loss(r)
    after = ml.snap("steal_end")
    # over the whole run (warm-up, load and drain), the same for every gateway
    r["run_steal_pct"] = round(100.0 * (after["sys"]["steal"] - before["sys"]["steal"])
                               / max(1, after["sys"]["total"] - before["sys"]["total"]), 1)
    # the load's own, where the run measured it (headrace's runs, the Node-RED harness): the whole
    # run's dilutes it (7.9 % during a load counted 4.7 % over its run, and that run fell behind)
    load_steal = r.get("steal_pct", (r.get("harness") or {}).get("sys_steal_pct"))
    if isinstance(load_steal, (int, float)):
        r["load_steal_pct"] = load_steal  # printed for each gateway that measured it (describe)
    stolen = max(r["run_steal_pct"], load_steal if isinstance(load_steal, (int, float)) else 0.0)
    if stolen >= STEAL_LIMIT and not o.steal_ok and r.get("clean"):
        r["clean"] = False
        r["stolen"] = True
    return r


def describe(r: dict) -> str:
    if r.get("error"):
        return "ERROR " + r["error"]
    if r.get("aborted"):
        return "disturbed before the load: " + r["aborted"]
    return (f"{r['delivered']:.0f}/{r['sent']} delivered, dup {r['duplicates']:.0f}, CPU {r['cpu_pct']} %, "
            f"RSS {r['rss_idle_mb']}/{r['rss_peak_mb']} MB, p50/p99 {r['lat_p50_ms']}/{r['lat_p99_ms']} ms, "
            f"foreign CPU {r['foreign_cpu_pct']} %, steal {r.get('load_steal_pct', '–')} % in the load, "
            f"{r.get('run_steal_pct')} % over the run"
            + (" STOLEN (the hypervisor's other guests)" if r.get("stolen") else "" if r["clean"] else " DISTURBED")
            + (" zero loss" if r["zero_loss"] else " LOSS or behind"))


def run_all(o, ml: MachineLoad, harnesses: dict, out) -> list[dict]:
    runs, stopped = [], set()
    plan = []
    for peer in o.loads:
        ours, theirs = streams_for(peer, o) if peer in harnesses else (streams_for(peer, o)[0], [])
        plan += interleave(ours, theirs)
    for rate in o.rates:
        for rep in range(o.repeat):
            for stream in plan:
                if stream in stopped:
                    continue
                for attempt in range(o.retries + 1):
                    log(f"{'/'.join(stream[:2])} load={stream[2]} rate={rate:g} msg/s"
                        + (f" (repeat {rep + 1})" if o.repeat > 1 else "") + (f" retry {attempt}" if attempt else ""))
                    r = one_run(stream, rate, o, ml, harnesses)
                    out.write(json.dumps({"kind": "run", **r}) + "\n")
                    out.flush()
                    runs.append(r)
                    log("  " + describe(r))
                    if r["clean"] and not r.get("error"):
                        break  # a disturbed run, or one that failed (a harness that did not come up), goes again
                if r["clean"] and not r["zero_loss"] or r.get("error"):
                    stopped.add(stream)
        if all(s in stopped for s in plan):
            break
    return runs


def best_rate(runs: list[dict], stream) -> tuple[float | None, float | None, dict | None]:
    """(highest zero-loss rate, the first rate above it that lost, the run there with the largest peak RSS)."""
    mine = [r for r in runs if (r["gateway"], r["transport"], r["load"]) == stream and r["clean"]]
    best, lost, at = None, None, None
    for rate in sorted({r["rate"] for r in mine}):
        rs = [r for r in mine if r["rate"] == rate]
        if not all(r["zero_loss"] for r in rs):
            lost = rate
            break
        best, at = rate, max(rs, key=lambda r: r["rss_peak_mb"])
    return best, lost, at


def med(rs: list[dict], key: str):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return round(statistics.median(vals), 1) if vals else None


def tables(runs: list[dict], o, unavailable: dict) -> str:
    lines = ["## Runs (clean ones; medians over repeats)", "",
             "| gateway | transport | load | msg/s | delivered/sent | dup | CPU % | RSS idle / peak MB "
             "| p50 / p99 ms | zero loss |", "|---|---|---|---|---|---|---|---|---|---|"]
    clean = [r for r in runs if r["clean"] and not r.get("error")]
    keys = sorted({(r["load"], r["rate"], r["gateway"] != "headrace", r["gateway"], r["transport"]) for r in clean})
    for load, rate, _, gw, tr in keys:
        rs = [r for r in clean if (r["load"], r["rate"], r["gateway"], r["transport"]) == (load, rate, gw, tr)]
        lines.append(f"| {gw} | {tr} | {load} | {rate:g} | {sum(r['delivered'] for r in rs):.0f}/"
                     f"{sum(r['sent'] for r in rs)} | {sum(r['duplicates'] for r in rs):.0f} | {med(rs, 'cpu_pct')} | "
                     f"{med(rs, 'rss_idle_mb')} / {med(rs, 'rss_peak_mb')} | {med(rs, 'lat_p50_ms')} / "
                     f"{med(rs, 'lat_p99_ms')} | {'yes' if all(r['zero_loss'] for r in rs) else 'no'} |")
    left = len(runs) - len(clean)
    lines += ["", f"{len(clean)} clean runs; {left} left out (disturbed by other load or the hypervisor's steal, "
              "or failed)", ""]
    lines += ["## Highest zero-loss rate, and headrace/peer", "",
              "| load | gateway | transport | zero-loss msg/s | readings/s | RSS idle / peak MB there "
              "| readings/s ÷ peer | RSS peak ÷ peer | target (≥ 10×, ≤ ⅓) |", "|---|---|---|---|---|---|---|---|---|"]
    for peer in o.loads:
        ours, theirs = streams_for(peer, o)
        if peer not in o.peers or peer in unavailable:
            theirs = []
        if peer in unavailable:
            lines.append(f"| {PEER_LOAD[peer]} | {peer} | – | not measured: {unavailable[peer]} | | | | | |")
        best = {s: best_rate(runs, s) for s in ours + theirs}
        for s in theirs + ours:
            rate, lost, at = best[s]
            if rate is None:
                why = f"none (loss at {lost:g})" if lost else "no clean run"
                lines.append(f"| {s[2]} | {s[0]} | {s[1]} | {why} | | | | | |")
                continue
            shown = f"{rate:g}" + (f" (loss at {lost:g})" if lost else " (no loss at the top rate)")
            row = (f"| {s[2]} | {s[0]} | {s[1]} | {shown} | {rate * READINGS_PER_MESSAGE:g} | "
                   f"{at['rss_idle_mb']} / {at['rss_peak_mb']} |")
            peers = [p for p in theirs if best[p][0] is not None]
            if s[0] != "headrace" or not peers:
                lines.append(row + " | | |")
                continue
            for p in peers:
                prate, _, pat = best[p]
                ratio, mem = rate / prate, at["rss_peak_mb"] / pat["rss_peak_mb"]
                met = "met" if ratio >= 10 and mem <= 1 / 3 else "not met"
                lines.append(f"{row} {'≥ ' if not lost else ''}{ratio:.1f}× {p[0]} {p[1]} | {mem:.2f} | {met} |")
                row = "| | | | | | |"
    return "\n".join(lines + [""] + same_rate(clean, o) + [""] + cost_per_message(clean, o))


# CPU per message of headrace at most this share of each peer's, at the same rate (issue 17)
CPU_TARGET = {"nodered": 0.5, "thingsboard": 0.25}


def cpu_us(r: dict) -> float | None:
    """Gateway CPU per delivered message, µs (all its threads, over the load)."""
    if r.get("cpu_pct") is None or not r.get("delivered"):
        return None
    return r["cpu_pct"] / 100 * r["duration"] / r["delivered"] * 1e6


def cost_per_message(clean: list[dict], o) -> list[str]:
    """At each rate where both delivered every message: CPU µs per message, and headrace ÷ peer."""
    lines = ["## Cost per message: gateway CPU µs per delivered message (medians of clean runs, min–max)", "",
             "| load | msg/s | headrace | µs/msg | peer | µs/msg | headrace ÷ peer | target | |",
             "|---|---|---|---|---|---|---|---|---|"]
    for peer in o.loads:
        ours, theirs = streams_for(peer, o)
        for rate in sorted({r["rate"] for r in clean}):
            at = {s: [r for r in clean if (r["gateway"], r["transport"], r["load"], r["rate"]) == (*s, rate)
                      and r["zero_loss"]] for s in ours + theirs}
            for h in ours:
                for p in theirs:
                    if not at[h] or not at[p]:
                        continue
                    hu = [x for x in map(cpu_us, at[h]) if x is not None]
                    pu = [x for x in map(cpu_us, at[p]) if x is not None]
                    if not hu or not pu:
                        continue
                    ratio = statistics.median(hu) / statistics.median(pu)
                    target = CPU_TARGET[p[0]]
                    lines.append(f"| {peer} | {rate:g} | {h[1]} | {statistics.median(hu):.0f} ({min(hu):.0f}–"
                                 f"{max(hu):.0f}) | {p[0]} {p[1]} | {statistics.median(pu):.0f} ({min(pu):.0f}–"
                                 f"{max(pu):.0f}) | {ratio:.2f} | ≤ {target} | "
                                 f"{'met' if ratio <= target else 'not met'} |")
    return lines


def same_rate(clean: list[dict], o) -> list[str]:
    """At each rate both ran cleanly: headrace's CPU, peak RSS and p99 latency over the peer's."""
    lines = ["## At the same rate: headrace ÷ peer (medians of clean runs)", "",
             "| load | msg/s | headrace | peer | zero loss (h / p) | CPU | RSS peak | p99 latency |",
             "|---|---|---|---|---|---|---|---|"]
    for peer in o.loads:
        ours, theirs = streams_for(peer, o)
        for rate in sorted({r["rate"] for r in clean}):
            at = {s: [r for r in clean if (r["gateway"], r["transport"], r["load"], r["rate"]) == (*s, rate)]
                  for s in ours + theirs}
            for h in ours:
                for p in theirs:
                    if not at[h] or not at[p]:
                        continue
                    ratio = [_ratio(med(at[h], k), med(at[p], k)) for k in ("cpu_pct", "rss_peak_mb", "lat_p99_ms")]
                    zl = "/".join("yes" if all(r["zero_loss"] for r in at[x]) else "no" for x in (h, p))
                    lines.append(f"| {peer} | {rate:g} | {h[1]} | {p[0]} {p[1]} | {zl} | " + " | ".join(ratio) + " |")
    return lines


def _ratio(a, b) -> str:
    return f"{a / b:.2f}" if a is not None and b else "–"


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", default="thingsboard,nodered", help="peer harnesses, comma-separated, or none")
    ap.add_argument("--rates", default="100,500,1000,1500,2000,5000,10000,15000,20000,30000,40000",
                    help="messages/s, ascending")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of load per run")
    ap.add_argument("--transports", default="serial,coap", help="headrace's ingest: serial, coap")
    ap.add_argument("--tb-storage", default="sqlite,memory", help="ThingsBoard storage: sqlite, memory")
    ap.add_argument("--loads", default=None, help="loads for headrace with --peers none (thingsboard, nodered)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per gateway and rate")
    ap.add_argument("--retries", type=int, default=2, help="reruns of a disturbed run")
    ap.add_argument("--quiet", type=float, default=60.0, help="max seconds to wait for an idle machine before a run")
    ap.add_argument("--drain", type=float, default=30.0, help="max seconds to wait for stragglers after the load")
    ap.add_argument("--min-drain", type=float, default=13.0, help="Node-RED harness: seconds after the load "
                    "(its last 10 s window closes)")
    ap.add_argument("--busy-ok", action="store_true",
                    help="count runs however busy the rest of the machine was (each records the others' CPU); "
                         "Node-RED's harness then runs in a PID namespace of its own, where its check for a "
                         "busy machine sees no other process")
    ap.add_argument("--steal-ok", action="store_true",
                    help=f"count runs whatever the hypervisor took (by default a run with {STEAL_LIMIT:g} %% steal or "
                         "more is disturbed, and retried with --retries)")
    ap.add_argument("--quick", action="store_true", help="5 s runs at 500,2000,10000,20000, short waits, no retries")
    ap.add_argument("--out", type=Path, default=None, help="JSON lines, one per run (default: a file in /tmp)")
    ap.add_argument("--peers-dir", type=Path, default=REPO.parent / "shared" / "peers")
    ap.add_argument("--state-dir", type=Path, default=Path.home() / ".cache" / "headrace-peers",
                    help="the peers' installs and run files (overlay upper dirs)")
    ap.add_argument("--profile", type=Path, default=None,
                    help="record headrace's gateway with py-spy into this folder (profiled runs are not clean)")
    ap.add_argument("--keep", action="store_true", help="keep the peers' run folders")
    ap.add_argument("--report", type=Path, default=None, help="only print the tables of an earlier --out file")
    o = ap.parse_args(argv)
    if o.quick:
        for k, v in QUICK.items():
            if getattr(o, k) == ap.get_default(k):
                setattr(o, k, v)
        o.min_drain = min(o.min_drain, 3.0)
    o.rates = sorted(float(r) for r in o.rates.split(","))
    o.transports = [t for t in o.transports.split(",") if t]
    o.tb_storage = [s for s in o.tb_storage.split(",") if s]
    o.peers = [] if o.peers in ("", "none") else o.peers.split(",")
    for p in o.peers:
        if p not in PEER_LOAD:
            ap.error(f"unknown peer {p!r}: thingsboard or nodered")
    o.loads = o.loads.split(",") if o.loads else (o.peers or ["thingsboard", "nodered"])
    o.out = o.out or Path(tempfile.gettempdir()) / time.strftime("headrace-peers-%Y%m%d-%H%M%S.jsonl")
    return o


def setup(o, harnesses: dict) -> dict:
    """What was measured: the code, the peers' versions, the machine, the options."""
    def out(*cmd):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=REPO).stdout.strip()
    info = {"headrace": out("git", "describe", "--always", "--dirty"), "cpus": os.cpu_count(),
            "mosquitto": (out("mosquitto", "-h") or "").split("\n")[0], "options": {
                k: (str(v) if isinstance(v, Path) else v) for k, v in vars(o).items()}}
    if "thingsboard" in harnesses:
        info["thingsboard"] = TB_VERSION
    if "nodered" in harnesses:
        pkg = harnesses["nodered"].path("node_modules/node-red/package.json")
        info["nodered"] = json.loads(pkg.read_text())["version"] if pkg.exists() else None
        info["node"] = out("node", "--version")
    return info


def report(o) -> int:
    lines = [json.loads(line) for line in o.report.read_text().splitlines() if line.strip()]
    runs = [r for r in lines if r["kind"] == "run"]
    unavailable = {r["peer"]: r["reason"] for r in lines if r["kind"] == "peer_unavailable"}
    print(tables(runs, o, unavailable))
    return 0


def main(argv=None) -> int:
    o = parse(argv)
    if o.report:
        return report(o)
    ml = MachineLoad(o.peers_dir)
    harnesses, unavailable = {}, {}
    with open(o.out, "a") as out:
        for peer in o.peers:
            h = PeerHarness(peer, o.peers_dir, o.state_dir)
            try:
                h.prepare()
                harnesses[peer] = h
            except (PeerUnavailable, OSError, subprocess.SubprocessError) as exc:
                unavailable[peer] = str(exc)
                log(f"PEER NOT AVAILABLE: {peer}: {exc}; going on without it")
                out.write(json.dumps({"kind": "peer_unavailable", "peer": peer, "reason": str(exc)}) + "\n")
        out.write(json.dumps({"kind": "setup", **setup(o, harnesses)}) + "\n")
        log(f"results: {o.out}")
        runs = run_all(o, ml, harnesses, out)
    print(tables(runs, o, unavailable))
    for peer, why in unavailable.items():
        print(f"\nNOT MEASURED: {peer}: {why}")
    print(f"\nruns as JSON lines: {o.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
