"""The status page's load time with 1,000 live nodes, in Debian's chromium, against 10 nodes.

    python bench/status_page.py [--nodes 1000] [--baseline 10] [--sensors 8] [--rounds 5]

Each size runs in a gateway process of its own (`--serve`): the real Gateway (spool,
pipeline, rules, dispatcher, status page) with N registered nodes, each sending an
authenticated frame of `--sensors` readings every second through the pipeline, as a
transport offers them; no broker, so the uplink is down and the spool grows, as on a
site whose link is out. chromium (Playwright, a fresh context each time: no cache)
opens the page; measured from navigation start: DOMContentLoaded, the load event, and
the first Server-Sent Events update applied by the page (window.headrace.firstUpdate).
Rounds alternate the two sizes; medians are printed with their ratio to the baseline.
Target (issue 18): the page loads in under 1 s with 1,000 nodes.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage",
        "--disable-extensions", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def serve(nodes: int, sensors: int, port: int, workdir: str) -> None:
    import cbor2

    from gateway import config
    from gateway.protocol import cose
    from gateway.runtime.registry import Registry
    from gateway.runtime.service import Gateway

    registry = Registry(path=Path(workdir) / "nodes.toml")
    names = [f"node{i:04d}" for i in range(nodes)]
    keys = {n: registry.add(n, transport="coap").key for n in names}
    registry.save()
    cfg = config.from_dict({
        "gateway": {"data_dir": workdir, "registry": str(registry.path)},
        "coap": {"enabled": False}, "mqtt": {"port": free_port(), "reconnect_max": 30},
        "http": {"port": port}, "spool": {"ttl_frames": 0.0},
        "resources": [{"id": f"mech{i}", "capabilities": ["mechanic"], "home": [i * 3.0, 2.0]} for i in range(5)],
        "zones": {"points": {"a": [0, 0], "b": [40, 0], "c": [40, 20]}, "edges": [["a", "b"], ["b", "c"]]},
    })
    seq = dict.fromkeys(names, 1000)
    async with Gateway(cfg, registry) as gw:
        print("ready", flush=True)
        chunk = max(1, nodes // 20)
        while True:  # every node once a second, in 20 slices
            for start in range(0, nodes, chunk):
                t = time.time()
                for n in names[start:start + chunk]:
                    seq[n] += 1
                    recs = [{-2: f"{n}/", -3: t, 0: "s0", 2: float(seq[n] % 97)}]
                    recs += [{0: f"s{k}", 2: float((seq[n] * k) % 101) / 7} for k in range(1, sensors)]
                    gw.pipeline.offer(cose.mac0(keys[n], n.encode(), cbor2.dumps(recs), seq=seq[n]), "sim",
                                      lambda ack, err: None)
                await asyncio.sleep(1 / 20)


def start_server(nodes: int, sensors: int, workdir: str):
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(nodes), "--sensors", str(sensors),
                             "--port", str(port), "--workdir", workdir], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "ready", "the gateway did not start"
    deadline = time.time() + 30
    while time.time() < deadline:  # every node seen once, so the table is full
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            if json.load(r)["nodes"] >= nodes:
                break
        time.sleep(0.2)
    time.sleep(3)  # a few sparkline samples
    return proc, port


def measure(browser, port: int) -> dict:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
    page.wait_for_function("window.headrace && window.headrace.firstUpdate !== null", timeout=30000)
    page.wait_for_load_state("load")
    nav = page.evaluate("""(() => { const n = performance.getEntriesByType('navigation')[0];
        const mark = name => (performance.getEntriesByName(name)[0] || {startTime: NaN}).startTime;
        return {parsed: n.domInteractive, script: mark('headrace-script'), ready: mark('headrace-ready'), ttfb: n.responseStart, html: n.responseEnd, dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd, bytes: n.transferSize,
                first: window.headrace.firstUpdate, rows: document.querySelectorAll('#nodes tbody tr').length}; })()""")
    ctx.close()
    return nav


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--baseline", type=int, default=10)
    ap.add_argument("--sensors", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve is not None:
        asyncio.run(serve(args.serve, args.sensors, args.port, args.workdir))
        return 0

    from playwright.sync_api import sync_playwright

    results: dict[int, list[dict]] = {args.nodes: [], args.baseline: []}
    with tempfile.TemporaryDirectory() as big, tempfile.TemporaryDirectory() as small:
        servers = {args.nodes: start_server(args.nodes, args.sensors, big),
                   args.baseline: start_server(args.baseline, args.sensors, small)}
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
                for _ in range(args.rounds):
                    for n in (args.baseline, args.nodes):
                        results[n].append(measure(browser, servers[n][1]))
                browser.close()
        finally:
            for proc, _port in servers.values():
                proc.terminate()
                proc.wait(10)
    print(f"status page, {args.sensors} sensors a node, each node a frame a second; medians of {args.rounds} "
          f"rounds (ms from navigation start, chromium {CHROMIUM}); machine shared: compare the ratios")
    print(f"{'nodes':>6} {'rows':>5} {'HTML KB':>8} {'first byte':>11} {'last byte':>10} {'DOMContentLoaded':>17} "
          f"{'load':>7} {'first SSE update':>17}")
    med = {}
    for n, runs in results.items():
        med[n] = {k: statistics.median(r[k] for r in runs) for k in ("parsed", "script", "ready", "ttfb", "html", "dcl", "load", "first", "bytes", "rows")}
        m = med[n]
        print(f"{n:>6} {m['rows']:>5.0f} {m['bytes'] / 1024:>8.0f} {m['ttfb']:>11.0f} {m['html']:>10.0f} "
              f"{m['dcl']:>17.0f} {m['load']:>7.0f} "
              f"{m['first']:>17.0f}   (HTML parsed {m['parsed']:.0f}, script {m['script']:.0f}-{m['ready']:.0f})")
    big_m, small_m = med[args.nodes], med[args.baseline]
    print(f"ratio {args.nodes}/{args.baseline} nodes: DOMContentLoaded {big_m['dcl'] / small_m['dcl']:.1f}x, "
          f"first update {big_m['first'] / small_m['first']:.1f}x; worst of {args.nodes}: DOMContentLoaded "
          f"{max(r['dcl'] for r in results[args.nodes]):.0f} ms, first update "
          f"{max(r['first'] for r in results[args.nodes]):.0f} ms (target: under 1000 ms)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    sys.exit(main())
