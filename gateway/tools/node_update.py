"""`headrace node update NAME… | --all --release FILE`: send a signed release to nodes through
the running gateway, and follow each node's update to its end.

The release goes to the gateway's status API (`POST /updates`), which checks it against
`[update] public_key` and queues a delivery per node; the nodes fetch it over their own
links (docs/protocol.md §9). Until every delivery has ended (confirmed or failed), a
line per node is printed whenever its progress moves: state, bytes, rate, time left.

Usage:
    headrace node update pump3 --release node-1.3.0.hrr [--config /etc/headrace/gateway.toml]
    headrace node update pump3 node-1.3.0.hrr            # the same
    headrace node update --all --release node-1.3.0.hrr --no-wait
    headrace node update --cancel pump3
Exit status: 0 when every node confirmed the release (or, with --no-wait, once queued);
1 when the gateway refused the release or a node refused it or rolled it back; 3 when
--timeout passed first (the deliveries go on at the gateway).
Caveats: needs `[update] public_key` on the gateway; the release is read whole into memory
(4 MiB at most).
"""
from __future__ import annotations

import json
import sys
import time
import urllib.parse

ENDED = ("confirmed", "failed")


def _kb(n: float) -> str:
    return f"{n / 1024:.1f} KB"


def describe(p: dict) -> str:
    """One line of a delivery's progress (also `headrace status`'s update lines)."""
    line = f"{p['node']:<16} {p['version']:<9} {p['state']:<10} {p['percent']:5.1f} %  " \
           f"{_kb(p['bytes'])} of {_kb(p['size'])}"
    if p["state"] == "sending":
        line += f", {p['rate_bps'] / 1024:.1f} KB/s"
        if p.get("eta_s") is not None:
            line += f", about {p['eta_s']:.0f} s left"
    elif p["state"] in ("sent", "installed", "confirmed"):
        line += f", sent in {p['seconds']:.1f} s"
    if p.get("error"):
        line += f": {p['error']}"
    return line


def _request(cfg, url: str, **kw):
    from gateway.tools.cli import _api_request
    return _api_request(cfg, url, **kw)


def _call(cfg, req) -> tuple[int, object]:
    # here, not at the top: the command line's parser imports this module, and urllib.request loads
    # ssl, hashlib, http.client and email (1.3 MB) in the gateway too (gateway/runtime/tls.py)
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, {"error": f"{exc.code} {exc.reason}: {text.strip()}"}


def run(args) -> int:
    from gateway import config
    from gateway.tools.cli import _api_base

    cfg = config.load(args.config)
    base = args.url or _api_base(cfg)
    names = list(args.nodes)
    release = args.release
    if args.cancel:
        code, obj = _call(cfg, _request(cfg, f"{base}/updates/{urllib.parse.quote(args.cancel)}/cancel",
                                        data=b"", method="POST"))
        print(f"{args.cancel}: {'cancelled' if code == 200 else 'no update to cancel'}")
        return 0 if code == 200 else 1
    if release is None and len(names) >= 2:
        release = names.pop()  # `node update NAME FILE`
    if release is None or not (names or args.all) or (names and args.all):
        print("headrace node update: give node names or --all, and --release FILE", file=sys.stderr)
        return 2
    try:
        with open(release, "rb") as f:
            data = f.read()
    except OSError as exc:
        print(f"headrace node update: {exc}", file=sys.stderr)
        return 2
    query = urllib.parse.urlencode({"nodes": "*" if args.all else ",".join(names)})
    try:
        code, obj = _call(cfg, _request(cfg, f"{base}/updates?{query}", data=data, method="POST",
                                        headers={"Content-Type": "application/octet-stream"}))
    except OSError as exc:
        print(f"headrace node update: cannot reach the gateway at {base} ({exc}); is it running?", file=sys.stderr)
        return 1
    if code != 201:
        print(f"headrace node update: {obj.get('error', obj) if isinstance(obj, dict) else obj}", file=sys.stderr)
        return 1
    nodes = [p["node"] for p in obj]
    for p in obj:
        print(f"{p['node']}: {p['version']} queued ({_kb(p['size'])}, release {p['rid']})")
    if args.no_wait:
        return 0
    return follow(cfg, base, nodes, args.timeout)


def follow(cfg, base: str, nodes: list[str], timeout: float, interval: float = 1.0) -> int:
    """Print each node's progress as it moves, until every delivery ended or `timeout` s passed."""
    deadline = time.monotonic() + timeout
    last: dict[str, tuple] = {}
    shown = 0.0
    while True:
        try:
            _, rows = _call(cfg, _request(cfg, f"{base}/updates"))
        except OSError as exc:  # the gateway restarting: the deliveries resume with it
            print(f"(the gateway does not answer: {exc}; waiting)", flush=True)
            rows = []
        mine = {p["node"]: p for p in rows if p["node"] in nodes} if isinstance(rows, list) else {}
        now = time.monotonic()
        for name, p in sorted(mine.items()):
            key = (p["state"], p["bytes"])
            # a line when the state changes, and while sending at most every 5 s
            if last.get(name, (None,))[0] != p["state"] or (key != last.get(name) and now - shown >= 5):
                print(describe(p), flush=True)
                last[name] = key
                shown = now
        if mine and len(mine) == len(nodes) and all(p["state"] in ENDED for p in mine.values()):
            failed = [p for p in mine.values() if p["state"] == "failed"]
            print(f"done: {len(mine) - len(failed)} confirmed, {len(failed)} failed")
            return 1 if failed else 0
        if now >= deadline:
            print(f"headrace node update: still going after {timeout:.0f} s; follow it with headrace status",
                  file=sys.stderr)
            return 3
        time.sleep(interval)


def add_parser(sub) -> None:
    up = sub.add_parser("update", help="send a signed release to nodes through the running gateway; follow it")
    up.add_argument("nodes", nargs="*", metavar="NAME", help="the nodes to update (or --all); a last argument "
                    "naming a file is the release")
    up.add_argument("--release", "-r", default=None, metavar="FILE", help="the release (headrace release build)")
    up.add_argument("--all", action="store_true", help="every node in the gateway's registry")
    up.add_argument("--cancel", default=None, metavar="NAME", help="forget a node's update at the gateway")
    up.add_argument("--config", "-c", default=None, help="gateway.toml, to find the status API")
    up.add_argument("--url", default=None, help="the status API, e.g. http://127.0.0.1:9108")
    up.add_argument("--no-wait", action="store_true", help="queue and return")
    up.add_argument("--timeout", type=float, default=3600.0, metavar="S", help="stop following after S seconds")
    up.set_defaults(fn=lambda args: run(args))
