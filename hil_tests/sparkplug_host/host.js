// A Sparkplug B 3.0 primary host application that checks an edge node, built on Eclipse
// Tahu's JavaScript payload library (npm sparkplug-payload) and npm mqtt.
//
//   node host.js --port 1883 --host-id scada --group plant --edge gw1
//
// It publishes its STATE (retained, with a Will), subscribes to the group, and checks
// every message of the edge node as it comes:
//   * NBIRTH first, seq 0, with bdSeq, Node Control/Rebirth and name + alias + datatype
//     for every metric; aliases unique across the edge node;
//   * NDEATH's bdSeq equals the live NBIRTH's (another one is stale: noted, ignored);
//   * seq +1 modulo 256 over NBIRTH, NDATA, DBIRTH, DDATA, DDEATH of a session;
//   * a device's DDATA only between its DBIRTH and its DDEATH, every alias resolved, the
//     value in the field of the datatype its birth declared;
//   * nothing but births after the host says it is offline and the edge node's NDEATH.
// stdin takes JSON lines: {"op": "offline"|"online"|"rebirth"|"report"|"exit"} and
// {"op": "dcmd", "device": D, "metrics": [{"name", "type", "value"}]}. stdout gives a JSON
// line per message seen ({"ev": "msg", ...}), and the report. Exit status: 1 if any rule
// was broken, else 0.
"use strict";

const mqtt = require("mqtt");
const readline = require("readline");
const sparkplug = require("sparkplug-payload").get("spBv1.0");
const Proto = require("sparkplug-payload/lib/sparkplugPayloadProto").org.eclipse.tahu.protobuf.Payload;

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].slice(2)] = process.argv[i + 1];
const base = `spBv1.0/${args.group}/`;
const stateTopic = `spBv1.0/STATE/${args["host-id"]}`;
// the oneof field of each datatype (Sparkplug 3.0 §6.4.16)
const FIELD = {1: "intValue", 2: "intValue", 3: "intValue", 5: "intValue", 6: "intValue", 4: "longValue",
               7: "longValue", 8: "longValue", 13: "longValue", 9: "floatValue", 10: "doubleValue",
               11: "booleanValue", 12: "stringValue", 14: "stringValue", 15: "stringValue", 17: "bytesValue"};
const TYPES = {Int8: 1, Int16: 2, Int32: 3, Int64: 4, UInt8: 5, UInt16: 6, UInt32: 7, UInt64: 8, Float: 9,
               Double: 10, Boolean: 11, String: 12, DateTime: 13, Text: 14, UUID: 15, Bytes: 17};

const violations = [];
const readings = [];   // [device or null, metric name, timestamp ms, value, is_historical, session number]
let sessions = 0;      // edge node sessions seen (an NBIRTH that is no rebirth starts one)
let session = null;    // {bdSeq, seq, alive}
let aliases = new Map();  // alias -> {device, name, type}
let devices = new Map();  // device -> born
let online = true;
let edgeDeadWhileOffline = false;

const num = (v) => (v !== null && typeof v === "object" && typeof v.toNumber === "function" ? v.toNumber() : v);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
function violation(text) {
  violations.push(text);
  say({ev: "violation", text});
}

function stamp() { return Date.now(); }
let stateTs = stamp();
const client = mqtt.connect(`mqtt://127.0.0.1:${args.port}`, {
  clientId: args["host-id"], clean: true, reconnectPeriod: 500, protocolVersion: 4,
  will: {topic: stateTopic, payload: JSON.stringify({online: false, timestamp: stateTs}), qos: 1, retain: true},
});

function publishState() {
  stateTs = Math.max(stateTs, stamp());
  client.publish(stateTopic, JSON.stringify({online, timestamp: stateTs}), {qos: 1, retain: true});
}

client.on("connect", () => {
  client.subscribe(`${base}#`, {qos: 1}, (err) => {
    if (err) violation(`subscribe failed: ${err}`);
    publishState();
    say({ev: "connected", online});
  });
});
client.on("error", (err) => say({ev: "mqtt-error", text: String(err)}));

function birthMetrics(kind, device, metrics) {
  for (const m of metrics) {
    if (m.name === undefined || m.alias === undefined || m.type === undefined || m.type === "Unknown") {
      violation(`${kind} ${device || ""}: metric ${JSON.stringify(m.name)} lacks a name, alias or datatype`);
      continue;
    }
    const alias = num(m.alias);
    const known = aliases.get(alias);
    if (known && (known.device !== device || known.name !== m.name)) {
      violation(`${kind} ${device || ""}: alias ${alias} of ${m.name} is already ${known.device}/${known.name}`);
    }
    aliases.set(alias, {device, name: m.name, type: TYPES[m.type]});
  }
}

function dataMetrics(kind, device, payload, raw) {
  payload.metrics.forEach((m, i) => {
    const r = raw.metrics[i];
    let def = m.alias !== undefined ? aliases.get(num(m.alias)) : undefined;
    if (def === undefined && m.name !== undefined) {
      def = [...aliases.values()].find((d) => d.device === device && d.name === m.name);
    }
    if (def === undefined || def.device !== device) {
      violation(`${kind} ${device || ""}: alias ${num(m.alias)} / name ${m.name} resolves to no metric of its birth`);
      return;
    }
    let value = null;
    if (!r.isNull) {
      const field = FIELD[r.datatype || def.type];
      if (r.value !== field) violation(`${kind} ${device || ""} ${def.name}: value in ${r.value}, birth says ${field}`);
      value = num(r[r.value]);
      if (value instanceof Uint8Array) value = Buffer.from(value).toString("hex");
    }
    if (m.timestamp === undefined) violation(`${kind} ${device || ""} ${def.name}: no timestamp`);
    readings.push([device, def.name, num(m.timestamp), value, m.isHistorical === true, sessions]);
    if (def.name === "Commands/result") say({ev: "result", device, value});
  });
}

client.on("message", (topic, buf) => {
  const parts = topic.split("/");
  const kind = parts[2];
  if (parts[1] === "STATE" || kind === "NCMD" || kind === "DCMD" || parts[3] !== args.edge) return;
  const device = parts[4] || null;
  let payload, raw;
  try {
    payload = sparkplug.decodePayload(buf);
    raw = Proto.decode(buf);
  } catch (err) {
    violation(`${topic}: undecodable payload: ${err}`);
    return;
  }
  const seq = payload.seq === undefined ? null : num(payload.seq);
  const ev = {ev: "msg", kind, device, seq, at: Date.now(), n: payload.metrics.length,
              hist: payload.metrics.filter((m) => m.isHistorical).length};
  if (kind === "NBIRTH" || kind === "NDEATH") {
    const bd = payload.metrics.find((m) => m.name === "bdSeq");
    ev.bdSeq = bd ? num(bd.value) : null;
    if (ev.bdSeq === null) violation(`${kind} without a bdSeq metric`);
  }
  if (kind === "NBIRTH") {
    if (!online && edgeDeadWhileOffline) violation("NBIRTH while the primary host is offline");
    if (seq !== 0) violation(`NBIRTH seq ${seq}, not 0`);
    const rebirth = payload.metrics.find((m) => m.name === "Node Control/Rebirth");
    if (!rebirth || rebirth.type !== "Boolean") violation("NBIRTH without Node Control/Rebirth (Boolean)");
    ev.rebirth = session !== null && session.alive && session.bdSeq === ev.bdSeq;
    if (session !== null && session.alive && !ev.rebirth) ev.endedUnannounced = session.bdSeq;
    if (!ev.rebirth) sessions += 1;
    ev.session = sessions;
    session = {bdSeq: ev.bdSeq, seq: 0, alive: true};
    aliases = new Map();
    devices = new Map();
    birthMetrics(kind, null, payload.metrics);
  } else if (kind === "NDEATH") {
    if (seq !== null) violation(`NDEATH carries seq ${seq}`);
    if (session !== null && session.alive && session.bdSeq === ev.bdSeq) {
      session.alive = false;
      if (!online) edgeDeadWhileOffline = true;
    } else {
      ev.stale = true;  // a Will from a session already replaced: hosts ignore it
    }
  } else if (session === null || !session.alive) {
    violation(`${kind} ${device || ""} outside an edge node session`);
  } else {
    if (seq !== (session.seq + 1) % 256) violation(`${kind} ${device || ""}: seq ${seq} after ${session.seq}`);
    session.seq = seq;
    if (kind === "DBIRTH") {
      for (const [a, d] of aliases) if (d.device === device) aliases.delete(a);
      birthMetrics(kind, device, payload.metrics);
      devices.set(device, true);
    } else if (kind === "DDEATH") {
      if (!devices.get(device)) violation(`DDEATH of ${device}, which is not born`);
      devices.set(device, false);
    } else if (kind === "DDATA") {
      if (!devices.get(device)) violation(`DDATA of ${device} before its DBIRTH`);
      dataMetrics(kind, device, payload, raw);
    } else if (kind === "NDATA") {
      dataMetrics(kind, null, payload, raw);
    } else {
      violation(`unknown message kind ${kind}`);
    }
  }
  say(ev);
});

readline.createInterface({input: process.stdin}).on("line", (line) => {
  const cmd = JSON.parse(line);
  if (cmd.op === "offline" || cmd.op === "online") {
    online = cmd.op === "online";
    edgeDeadWhileOffline = false;
    publishState();
  } else if (cmd.op === "rebirth") {
    const p = sparkplug.encodePayload({timestamp: stamp(), metrics: [
      {name: "Node Control/Rebirth", type: "Boolean", value: true}]});
    client.publish(`${base}NCMD/${args.edge}`, Buffer.from(p), {qos: 1});
  } else if (cmd.op === "dcmd") {
    const p = sparkplug.encodePayload({timestamp: stamp(), metrics: cmd.metrics});
    client.publish(`${base}DCMD/${args.edge}/${cmd.device}`, Buffer.from(p), {qos: 1});
  } else if (cmd.op === "report") {
    say({ev: "report", violations, readings});
  } else if (cmd.op === "exit") {
    client.end(false, {}, () => process.exit(violations.length ? 1 : 0));
  }
  say({ev: "done", op: cmd.op});
});
