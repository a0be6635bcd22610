"""`headrace …`: the command line of installers and operators."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from gateway.errors import ConfigError


def _cmd_gateway_run(args) -> int:
    from gateway import config
    from gateway.runtime import tls

    cfg = config.load(args.config)
    tls.leave_out_unless_needed(cfg)  # before asyncio, paho and hashlib load
    from gateway.runtime import logs, service
    from gateway.runtime.registry import Registry

    logs.setup(cfg.gateway.log_level)
    registry = Registry.load(cfg.gateway.registry)
    _run(service.serve(cfg, registry, args.config))
    return 0


def _cmd_install_service(args) -> int:
    from pathlib import Path

    from gateway.tools.install import InstallError, install

    try:
        install(Path(args.root), args.user, start=not args.no_start, executable=args.executable,
                watchdog=args.watchdog)
    except InstallError as exc:
        print(f"headrace: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_check_config(args) -> int:
    from gateway import config
    from gateway.runtime.registry import Registry

    cfg = config.load(args.config)
    registry = Registry.load(cfg.gateway.registry)
    from gateway.config import check_nodes
    check_nodes(cfg, registry)
    print(f"{args.config or '(embedded defaults)'}: OK — gateway {cfg.gateway.site}/{cfg.gateway.id}, "
          f"{len(registry)} nodes, {len(cfg.serial.ports)} serial ports, "
          f"CoAP {'on' if cfg.coap.enabled else 'off'}, MQTT {cfg.mqtt.host}:{cfg.mqtt.port}, "
          f"{len(cfg.rules)} rules, {len(cfg.resources)} resources")
    from gateway.config.advice import config_warnings
    for warning in config_warnings(cfg):
        print(f"warning: {warning}")
    return 0


def _cmd_status(args) -> int:
    import time
    import urllib.request

    from gateway import config

    cfg = config.load(args.config)
    base = args.url or _api_base(cfg)
    try:
        with urllib.request.urlopen(_api_request(cfg, base + "/nodes"), timeout=5) as r:
            nodes = json.load(r)
        with urllib.request.urlopen(_api_request(cfg, base + "/health"), timeout=5) as r:
            health = json.load(r)
    except OSError as exc:
        print(f"headrace status: cannot reach the gateway at {base} ({exc}); is it running? "
              f"(systemctl status headrace-gateway)", file=sys.stderr)
        return 1
    now = time.time()
    print(f"gateway up {health['uptime_s']:.0f} s, uplink {'connected' if health['uplink_connected'] else 'DOWN'}, "
          f"{len(nodes)} nodes seen")
    print(f"{'node':<16} {'link':<7} {'last seen':>10} {'rate/s':>7} {'frames':>8} {'readings':>9} {'errors':>7} "
          f"{'quality':>8} {'battery':>8}")
    for n in nodes:
        ago = f"{now - n['last_seen']:.0f} s ago" if n["last_seen"] else "never"
        quality = f"{100 * n['link_quality']:.1f} %" if n.get("link_quality") is not None else "-"
        battery = f"{n['battery']:g}" if isinstance(n.get("battery"), (int, float)) else "-"
        print(f"{n['node']:<16} {n['transport']:<7} {ago:>10} {n.get('rate', 0):>7.2f} {n['frames']:>8} "
              f"{n['readings']:>9} {n['rejected']:>7} {quality:>8} {battery:>8}")
    print("errors: frames rejected or duplicated (resends whose ack was lost); quality: the share of a node's "
          "frames taken first time")
    updates = [n["update"] for n in nodes if n.get("update")]
    if updates:
        from gateway.tools.node_update import describe
        print("updates:")
        for p in updates:
            print("  " + describe(p))
    return 0


def _api_base(cfg) -> str:
    """The gateway's API address from [http]; a wildcard bind is reached on loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(cfg.http.bind, cfg.http.bind)
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if cfg.http.tls_cert else 'http'}://{host}:{cfg.http.port}"


def _api_request(cfg, url: str, **kw):
    """A request carrying the [http] token, when the config sets one."""
    import urllib.request

    req = urllib.request.Request(url, **kw)
    if cfg.http.token:
        req.add_header("Authorization", f"Bearer {cfg.http.token}")
    return req


def _cmd_demand(args) -> int:
    import urllib.error
    import urllib.request

    from gateway import config

    body: dict = {"need": args.need, "priority": args.priority}
    if args.zone:
        body["zone"] = args.zone
    if args.at:
        try:
            body["at"] = [float(v) for v in args.at.split(",")]
        except ValueError:
            body["at"] = None
        if len(body["at"] or ()) != 2:
            print(f"headrace demand: --at takes X,Y in plant metres, got {args.at!r}", file=sys.stderr)
            return 2
    cfg = config.load(args.config)
    base = args.url or _api_base(cfg)
    req = _api_request(cfg, base + "/demands", data=json.dumps(body).encode(), method="POST",
                       headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            d = json.load(r)
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            text = json.loads(text).get("error", exc.reason)
        except ValueError:  # not the dispatcher's answer: a 401 for want of [http] token, say
            text = f"{exc.code} {exc.reason}: {text.strip()}"
        print(f"headrace demand: refused: {text}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"headrace demand: cannot reach the gateway at {base} ({exc}); is it running?", file=sys.stderr)
        return 1
    print(f"demand {d['id']} open: {d['need']} at ({d['at'][0]:g}, {d['at'][1]:g}), priority {d['priority']}")
    return 0


def _cmd_demo(args) -> int:
    from gateway.tools import demo
    from gateway.runtime import logs

    logs.setup("warning" if not args.verbose else "info")
    if args.fleet:  # two lines, two gateways and the fleet dispatcher (docs/matching.md, "Across gateways")
        from gateway.tools import demo_fleet
        return _run(demo_fleet.run_fleet_demo(args.duration, args.workdir))
    return _run(demo.run_demo(args.duration, args.mqtt_host, args.mqtt_port, args.period_ms,
                              args.python_nodes, args.workdir))


def _cmd_node_provision(args) -> int:
    from gateway.runtime.files import write_together
    from gateway.runtime.registry import Registry

    try:
        reg = Registry.load(args.registry)
    except ConfigError:
        reg = Registry(path=args.registry)
    if args.name in reg.nodes and not args.force:
        print(f"headrace: node {args.name} is already provisioned (use --force to replace its key)", file=sys.stderr)
        return 1
    node = reg.add(args.name, transport=args.transport)
    cfg = {"node": node.name, "key": node.key.hex(), "transport": args.transport,
           "sensors": args.sensors.split(","), "period_ms": 1000, "batch": 8}
    text = json.dumps(cfg, indent=2)
    if args.output:  # the node's key, in both files or in neither; the config readable by its owner only
        write_together([(args.output, (text + "\n").encode(), 0o600), (args.registry, reg.render(), 0o600)])
        print(f"node {node.name} registered in {args.registry}; config written to {args.output}")
    else:
        reg.save(args.registry)
        print(text)
    return 0


def _cmd_node_list(args) -> int:
    from gateway.runtime.registry import Registry

    reg = Registry.load(args.registry)
    print(f"{'node':<32} {'transport':<9} {'key id':<8}")
    for node in sorted(reg.nodes.values(), key=lambda n: n.name):
        print(f"{node.name:<32} {node.transport or '-':<9} {node.key_id:<8}")
    print(f"{len(reg)} nodes in {args.registry}")
    return 0


def _cmd_node_remove(args) -> int:
    from gateway.runtime.registry import Registry

    reg = Registry.load(args.registry)
    node = reg.remove(args.name)
    reg.save(args.registry)
    print(f"node {node.name} (key {node.key_id}) removed from {args.registry}; the gateway rejects its frames "
          f"once it reloads the registry: systemctl reload headrace-gateway")
    return 0


def _cmd_node_rekey(args) -> int:
    from pathlib import Path

    from gateway.runtime.files import write_together
    from gateway.runtime.registry import Registry

    reg = Registry.load(args.registry)
    reg.node(args.name)  # not registered: a ConfigError before anything is written
    path = Path(args.config or f"{args.name}.json")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"headrace: cannot read the config of node {args.name} at {path} ({exc}): give --config PATH, "
              f"or make a new one with `headrace node provision {args.name} --force -o PATH`", file=sys.stderr)
        return 1
    if not isinstance(cfg, dict) or cfg.get("node") != args.name:
        print(f"headrace: {path} is not the config of node {args.name}", file=sys.stderr)
        return 1
    old = reg.nodes[args.name].key_id
    node = reg.rekey(args.name)
    cfg["key"] = node.key.hex()
    write_together([(path, (json.dumps(cfg, indent=2) + "\n").encode(), path.stat().st_mode & 0o777),
                    (args.registry, reg.render(), 0o600)])  # the new key in both files or in neither
    print(f"node {node.name}: new key {node.key_id} (was {old}) in {args.registry} and {path}")
    print(f"re-flash the node (headrace node flash --port PORT --config {path}) and reload the gateway "
          f"(systemctl reload headrace-gateway): until both are done its frames are rejected")
    return 0


def _cmd_node_flash(args) -> int:
    from gateway.tools.flash import FlashError, flash

    try:
        flash(args.port, config=args.config, node=args.node, board=args.board, image=args.firmware_image,
              gateway_url=args.gateway_url, timeout=args.timeout, verify=not args.no_verify, chip=args.chip,
              force=args.force)
    except FlashError as exc:
        print(f"headrace node flash: {exc}", file=sys.stderr)
        return 3 if exc.step == "verify" else 1
    return 0


def _cmd_release(args) -> int:
    from pathlib import Path

    from gateway.tools import release

    try:
        if args.sub == "keygen":
            priv, pub = release.keygen(Path(args.out), force=args.force)
            print(f"private key {priv} (mode 0600: keep it off the gateways, back it up offline)")
            print(f"public key  {pub}: provision nodes with it (docs/installer.md, Updating nodes)")
        elif args.sub == "build":
            m = release.build(Path(args.key), args.version, Path(args.output), target=args.target)
            print(f"{args.output}: version {release.version_text(m.version)}, target {m.target}, "
                  f"{len(m.parts)} parts, {m.size} bytes, signed")
        else:
            running = release.parse_version(args.running) if args.running else None
            m = release.read(Path(args.file).read_bytes(), release.load_public(Path(args.pub)), running,
                             args.target)[0]
            print(f"{args.file}: OK: version {release.version_text(m.version)}, target {m.target}, "
                  f"{len(m.parts)} parts, {m.size} bytes, signature and hashes good")
    except release.ReleaseError as exc:
        print(f"headrace release {args.sub}: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"headrace release {args.sub}: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_sink_run(args) -> int:
    from sink import config as sink_config
    from sink.service import main

    try:
        cfg = sink_config.load(args.config)
    except ConfigError as exc:
        print(f"headrace sink: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return _run(main(cfg))


def _cmd_fleet(args) -> int:
    from sink import fleet_service

    try:
        if args.sub == "check-config":
            print(fleet_service.check(args.config))
            return 0
        cfg = fleet_service.load(args.config)
    except ConfigError as exc:
        print(f"headrace fleet: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return fleet_service.serve(cfg)


def _run(coro) -> int:
    import asyncio

    from gateway.runtime import tls

    try:
        runner = tls.import_uvloop().run  # optional: faster datagram and stream paths
    except ImportError:
        runner = asyncio.run
    try:
        return runner(coro) or 0
    except KeyboardInterrupt:
        return 130


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, which finds the terminal's width without importing shutil: argparse
    makes one for every argument it adds, and shutil brings bz2 and lzma, 0.5 MB in the gateway's
    RSS. The width as shutil.get_terminal_size gives it: $COLUMNS, the terminal's, or 80."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        if width is None:
            import os

            try:
                columns = int(os.environ["COLUMNS"])
            except (KeyError, ValueError):
                columns = 0
            if columns <= 0:
                try:
                    columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
                except (AttributeError, ValueError, OSError):
                    columns = 0
            width = (columns or 80) - 2
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser with _Formatter; subcommands' parsers are of the same class."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="headrace", description="headrace industrial edge gateway")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the gateway with three simulated MicroPython nodes")
    d.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    d.add_argument("--mqtt-host", default=None, help="use this broker instead of the embedded one")
    d.add_argument("--mqtt-port", type=int, default=1883)
    d.add_argument("--period-ms", type=int, default=250, help="sampling period of the simulated sensors")
    d.add_argument("--python-nodes", action="store_true", help="run the firmware under CPython, not MicroPython")
    d.add_argument("--workdir", default=None, help="keep spool, registry and node files here")
    d.add_argument("--fleet", action="store_true",
                   help="two lines with a gateway each: line 2's mechanic is lent to line 1's pump")
    d.add_argument("-v", "--verbose", action="store_true")
    d.set_defaults(fn=_cmd_demo)

    g = sub.add_parser("gateway", help="run or check the gateway service").add_subparsers(dest="sub", required=True)
    r = g.add_parser("run", help="run the gateway in the foreground (systemd runs this)")
    r.add_argument("--config", "-c", default=None, help="gateway.toml (default: embedded defaults)")
    r.set_defaults(fn=_cmd_gateway_run)
    i = g.add_parser("install-service", help="install the systemd unit, config folder and service user")
    i.add_argument("--root", default="/", help="write into this folder instead of the system (staging, images)")
    i.add_argument("--user", default="headrace")
    i.add_argument("--executable", default=None, help="the headrace command the unit runs (default: this one)")
    i.add_argument("--watchdog", type=int, default=30, help="WatchdogSec, seconds")
    i.add_argument("--no-start", action="store_true", help="write the files only")
    i.set_defaults(fn=_cmd_install_service)
    c = g.add_parser("check-config", help="validate gateway.toml and the node registry")
    c.add_argument("--config", "-c", default=None)
    c.set_defaults(fn=_cmd_check_config)

    stt = sub.add_parser("status", help="a table of the nodes a running gateway sees")
    stt.add_argument("--config", "-c", default=None, help="gateway.toml, to find the status API")
    stt.add_argument("--url", default=None, help="the status API, e.g. http://127.0.0.1:9108")
    stt.set_defaults(fn=_cmd_status)

    dm = sub.add_parser("demand", help="ask the running gateway for a resource (a mechanic, a forklift…)")
    dm.add_argument("need", help="the capability needed, e.g. mechanic")
    dm.add_argument("--at", default=None, help="X,Y: where, in plant metres")
    dm.add_argument("--zone", default=None, help="where, as a zone point of [zones]")
    dm.add_argument("--priority", type=int, default=5, help="1 (low) to 10 (urgent)")
    dm.add_argument("--config", "-c", default=None, help="gateway.toml, to find the gateway's API")
    dm.add_argument("--url", default=None, help="the gateway's API, e.g. http://127.0.0.1:9108")
    dm.set_defaults(fn=_cmd_demand)

    from gateway.tools import records
    records.add_parsers(sub)

    sk = sub.add_parser("sink", help="the cloud end: store gateways' batches in PostgreSQL or SQLite").add_subparsers(
        dest="sub", required=True)
    skr = sk.add_parser("run", help="run one sink worker (start more for more throughput)")
    skr.add_argument("--config", default=None, help="sink.toml (docs/cloud.md); default: SQLite, local NATS")
    skr.add_argument("-v", "--verbose", action="store_true")
    skr.set_defaults(fn=_cmd_sink_run)

    ft = sub.add_parser("fleet", help="the cloud end: lend resources across a site's gateways (one a site)"
                        ).add_subparsers(dest="sub", required=True)
    flr = ft.add_parser("run", help="run the fleet dispatcher in the foreground (systemd runs this)")
    flr.add_argument("--config", "-c", required=True, help="fleet.toml (docs/matching.md, the fleet dispatcher)")
    flr.add_argument("-v", "--verbose", action="store_true")
    flr.set_defaults(fn=_cmd_fleet)
    flc = ft.add_parser("check-config", help="validate fleet.toml and its site map")
    flc.add_argument("--config", "-c", required=True)
    flc.set_defaults(fn=_cmd_fleet)


    n = sub.add_parser("node", help="provision, flash and manage nodes").add_subparsers(dest="sub", required=True)
    pv = n.add_parser("provision", help="make a key, register the node, write its config")
    pv.add_argument("name")
    pv.add_argument("--registry", default="/etc/headrace/nodes.toml")
    pv.add_argument("--transport", choices=["serial", "coap"], default="serial")
    pv.add_argument("--sensors", default="temp")
    pv.add_argument("--output", "-o", default=None, help="write the node config JSON here (default: stdout)")
    pv.add_argument("--force", action="store_true")
    pv.set_defaults(fn=_cmd_node_provision)
    ls = n.add_parser("list", help="a table of the registered nodes (names, transports, key ids)")
    ls.add_argument("--registry", default="/etc/headrace/nodes.toml")
    ls.set_defaults(fn=_cmd_node_list)
    rm = n.add_parser("remove", help="unregister a node (its frames are rejected after a reload)")
    rm.add_argument("name")
    rm.add_argument("--registry", default="/etc/headrace/nodes.toml")
    rm.set_defaults(fn=_cmd_node_remove)
    rk = n.add_parser("rekey", help="a new key for a node, in the registry and in its config file")
    rk.add_argument("name")
    rk.add_argument("--registry", default="/etc/headrace/nodes.toml")
    rk.add_argument("--config", default=None, help="the node's config JSON (default: NAME.json)")
    rk.set_defaults(fn=_cmd_node_rekey)
    fl = n.add_parser("flash", help="put MicroPython, the firmware and a node's config on a board; wait for the node")
    fl.add_argument("--port", required=True, help="the board's serial port, e.g. /dev/ttyUSB0")
    fl.add_argument("--board", choices=["esp32", "rp2", "unix", "qemu-m3"], default="esp32",
                    help="the kind of board (unix: the MicroPython unix port behind a pty, on the bench; "
                         "qemu-m3: the Cortex-M3 bench board under QEMU, whose image holds the firmware)")
    fl.add_argument("--firmware-image", default=None, metavar="FILE",
                    help="first write this MicroPython image (.bin with esptool for esp32, .uf2 for rp2)")
    fl.add_argument("--chip", default="esp32", choices=["esp32", "esp32s2", "esp32s3", "esp32c3", "esp32c6"],
                    help="the ESP32 chip, for the image offset")
    fl.add_argument("--node", default=None, metavar="NAME", help="the node's name (default: from its config)")
    fl.add_argument("--config", default=None, metavar="PATH", help="the node's config JSON (default: NODE.json)")
    fl.add_argument("--gateway-url", default="http://127.0.0.1:9108", metavar="URL",
                    help="the gateway's status API (default: http://127.0.0.1:9108)")
    fl.add_argument("--timeout", type=float, default=60.0, metavar="S",
                    help="seconds to wait for the node's first frame, and for the board after an image")
    fl.add_argument("--no-verify", action="store_true", help="do not wait for the node at the gateway")
    fl.add_argument("--force", action="store_true", help="copy every file, whatever the board's manifest says")
    fl.set_defaults(fn=_cmd_node_flash)
    from gateway.tools import node_update
    node_update.add_parser(n)

    rl = sub.add_parser("release", help="make release keys; build, sign and check node updates").add_subparsers(
        dest="sub", required=True)
    kg = rl.add_parser("keygen", help="a new Ed25519 release key pair (release.pem, release.pub)")
    kg.add_argument("--out", default=".", help="folder for release.pem and release.pub")
    kg.add_argument("--force", action="store_true", help="replace an existing key (nodes trust the old one)")
    kg.set_defaults(fn=_cmd_release)
    bd = rl.add_parser("build", help="compile the firmware and sign a release (a manifest + the .mpy parts)")
    bd.add_argument("--key", required=True, help="the private release key (release.pem)")
    bd.add_argument("--version", required=True, help="MAJOR.MINOR.PATCH, newer than what the nodes run")
    bd.add_argument("--output", "-o", required=True, help="the release file to write")
    bd.add_argument("--target", default=None, help="the nodes' .mpy version, e.g. mpy6 (default: mpy-cross's)")
    bd.set_defaults(fn=_cmd_release)
    vf = rl.add_parser("verify", help="check a release: signature, every part's size and SHA-256")
    vf.add_argument("file")
    vf.add_argument("--pub", required=True, help="the release public key (release.pub)")
    vf.add_argument("--running", default=None, help="refuse unless newer than this version")
    vf.add_argument("--target", default=None, help="refuse unless built for this target")
    vf.set_defaults(fn=_cmd_release)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as exc:
        print(f"headrace: configuration error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`headrace decode FILE | head`): end quietly, and keep Python's
        # final flush of stdout from raising again at exit
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # the machine's, not the command's: a full disk, a read-only folder, no permission
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"headrace: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
