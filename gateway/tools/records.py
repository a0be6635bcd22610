"""`headrace spool` and `headrace decode`: what a gateway stored and what it sent, read back.

Usage:
    headrace spool stats|inspect|replay [--config gateway.toml | --spool FILE]
    headrace decode PAYLOAD [--schema SCHEMA_PAYLOAD] [--kind]
"""
from __future__ import annotations

import json
import sys


def add_parsers(sub) -> None:
    dec = sub.add_parser("decode", help="decode an uplink payload into JSON Lines")
    dec.add_argument("file", help="a payload file taken from the broker (data, events, schema or state topic), "
                                  "or - for stdin")
    dec.add_argument("--kind", action="store_true",
                     help="also print the payload's kind (data, events, schema, state) on stderr")
    dec.add_argument("--schema", action="append", metavar="FILE",
                     help="the retained payload of headrace/v1/<site>/<gw>/schema, which version 3 and 4 data batches "
                          "refer to (repeat for several gateways or lineages)")
    dec.set_defaults(fn=cmd_decode)

    sp = sub.add_parser("spool", help="look into the spool, or send it to a broker").add_subparsers(
        dest="sub", required=True)
    for name, text in (("stats", "records and bytes waiting, per kind; oldest ages"),
                       ("inspect", "the oldest records, decoded, as JSON Lines"),
                       ("replay", "publish everything the spool holds to a broker, then exit (stop the gateway first)")):
        x = sp.add_parser(name, help=text)
        x.add_argument("--config", "-c", default=None, help="gateway.toml (finds the spool and the broker)")
        x.add_argument("--spool", default=None, help="a spool file, e.g. copied from a dead gateway")
        if name == "stats":
            x.add_argument("--check", action="store_true", help="also run PRAGMA integrity_check")
        if name == "inspect":
            x.add_argument("--limit", type=int, default=20)
            x.add_argument("--kind", choices=["event", "window", "frame"], default=None)
        if name == "replay":
            x.add_argument("--mqtt-host", default=None)
            x.add_argument("--mqtt-port", type=int, default=None)
        x.set_defaults(fn=cmd_spool)


def spool_path(args):
    from pathlib import Path

    from gateway import config

    if args.spool:
        return Path(args.spool), config.load(args.config)
    cfg = config.load(args.config)
    return cfg.spool_path, cfg


def cmd_spool(args) -> int:
    import asyncio  # here, not at the top: `headrace gateway run` decides first whether `ssl` loads
    import time

    from gateway.runtime.spool import PRIORITY, Spool
    from gateway.runtime.uplink import batch

    path, cfg = spool_path(args)
    if not path.exists():
        print(f"headrace spool: no spool at {path} (set [gateway] data_dir or give --spool)", file=sys.stderr)
        return 1

    async def main() -> int:
        spool = await Spool.open(path, None)  # its journal as it is, if it has one
        try:
            if args.sub == "stats":
                depth, size = await spool.depth()
                oldest = await spool.oldest_by_kind()
                ages = {kind: round(time.time() - t, 1) for kind, t in oldest.items()}
                out = {"spool": str(path), "records": depth, "bytes": size, "by_kind": spool.stats(),
                       "oldest_age_s": ages, "nodes_with_replay_state": len(await spool.replay_windows())}
                if args.check:
                    out["integrity"] = await spool.integrity_check()
                print(json.dumps(out, indent=2))
                return 0 if out.get("integrity", "ok") == "ok" else 1
            if args.sub == "inspect":
                shown = 0
                for kind in (args.kind,) if args.kind else ("event", "window", "frame"):
                    for rid, k, body in await spool.read(PRIORITY[kind], 0, args.limit - shown):
                        print(json.dumps(describe(rid, k, body, batch)))
                        shown += 1
                return 0
            cfg2 = cfg.replace(mqtt={k: v for k, v in (("host", args.mqtt_host), ("port", args.mqtt_port)) if v})
            from gateway.runtime.metrics import Metrics
            if cfg2.jetstream.enabled and not (args.mqtt_host or args.mqtt_port):
                from gateway.runtime.uplink.jetstream import JetStreamUplink
                up, where = JetStreamUplink(cfg2, spool, asyncio.Event(), Metrics()), ", ".join(cfg2.jetstream.servers)
            else:
                from gateway.runtime.uplink.mqtt import MqttUplink
                from gateway.runtime.uplink.sparkplug import SparkplugUplink
                uplink = SparkplugUplink if cfg2.sparkplug.enabled else MqttUplink  # the format the service speaks
                up, where = uplink(cfg2, spool, asyncio.Event(), Metrics()), f"{cfg2.mqtt.host}:{cfg2.mqtt.port}"
            n = await up.drain()
            print(f"replayed {n} records from {path} to {where}; {(await spool.depth())[0]} left")
            return 0
        finally:
            await spool.close()

    try:
        from gateway.tools.cli import _run
        return _run(main())
    except (OSError, ConnectionError) as exc:
        print(f"headrace spool replay: broker unavailable: {exc}", file=sys.stderr)
        return 1


def describe(rid: int, kind: str, body: bytes, batch) -> dict:
    import cbor2

    item = cbor2.loads(body)
    if kind == "frame":
        node, seq, received, senml = item
        return {"id": rid, "kind": kind, "node": node, "seq": seq, "received": received,
                "readings": [list(r) if not isinstance(r[2], bytes) else [r[0], r[1], r[2].hex()]
                             for r in batch.frame_readings(node, received, senml)]}
    if kind == "window":
        return {"id": rid, "kind": kind, **dict(zip(batch.WINDOW_FIELDS, item))}
    return {"id": rid, "kind": kind, "body": item if isinstance(item, (dict, list, str, int, float)) else repr(item)}


def cmd_decode(args) -> int:
    from gateway.runtime.uplink import batch, payloads

    try:
        data = sys.stdin.buffer.read() if args.file == "-" else open(args.file, "rb").read()
    except OSError as exc:
        print(f"headrace decode: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    decoder = batch.Decoder()  # the schemas that version 3 and 4 data batches refer to
    for path in args.schema or ():
        try:
            decoder.feed(open(path, "rb").read())
        except OSError as exc:
            print(f"headrace decode: cannot read the schema {path}: {exc.strerror}", file=sys.stderr)
            return 1
        except batch.BatchError as exc:
            print(f"headrace decode: {path}: {exc}", file=sys.stderr)
            return 1
    try:
        kind, rows = payloads.read(data, schemas=decoder)
    except payloads.BatchError as exc:
        print(f"headrace decode: {exc} (reads the data, events, schema and state topics' payloads)",
              file=sys.stderr)
        return 1
    if args.kind:
        print(kind, file=sys.stderr)
    try:
        for row in rows:
            sys.stdout.write(json.dumps(row, allow_nan=True) + "\n")
    except payloads.BatchError as exc:
        print(f"headrace decode: {exc} (the rows before it are printed)", file=sys.stderr)
        return 1
    return 0
