"""The status page's HTML, rendered on the server from one snapshot (see __init__.py).

The node table, the gateway and the uplink panels are HTML from the start, so a
page with a thousand nodes shows them before any script runs; status.js then
draws the map, the alarms, the events and the sparklines from the same snapshot
(embedded as JSON) and keeps everything current from the event stream. The cell
formats here and in status.js are the same; change them together.
"""
from __future__ import annotations

import json
from pathlib import Path
from string import Template

_TEMPLATE: Template | None = None


def escape(s: str) -> str:
    """`html.escape(s)`, the same five replacements: importing `html` loads its entity tables
    and compiles their pattern, 0.5 MB of the gateway's RSS for a function of five lines."""
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;").replace(
        "'", "&#x27;")


def _template() -> Template:
    global _TEMPLATE  # read once: the file ships with the package and does not change under a running gateway
    if _TEMPLATE is None:
        _TEMPLATE = Template(Path(__file__).with_name("status.html").read_text())
    return _TEMPLATE


def render_page(state: dict) -> str:
    g = state["gateway"]
    rest = {k: v for k, v in state.items() if k != "nodes"}
    return _template().substitute(
        title=escape(f"headrace {g['site']}/{g['id']}"),
        gateway=gateway_panel(g), uplink=uplink_panel(state["uplink"]),
        rows="".join(node_row(r, state["now"]) for r in state["nodes"]),
        node_count=len(state["nodes"]),
        # the snapshot minus the rows (the table holds them); '</' cannot close the script element
        initial=json.dumps(rest, separators=(",", ":"), default=str).replace("</", "<\\/"))


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s ago"
    if s < 7200:
        return f"{s // 60} min ago"
    return f"{s // 3600} h ago"


def duration(seconds: float) -> str:
    s = int(seconds)
    d, h, m = s // 86400, s // 3600 % 24, s // 60 % 60
    return f"{d} d {h} h" if d else f"{h} h {m} min" if h else f"{m} min {s % 60} s"


def size(n: int | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def late(row: dict, now: float) -> bool:
    """Silent for longer than 3 of its usual intervals (at least 10 s), or a minute when it has no rate."""
    if not row["last_seen"]:
        return True
    wait = max(3 * 60 / row["per_min"], 10) if row["per_min"] else 60
    return now - row["last_seen"] > wait


def fmt(v) -> str:
    """A value for a cell, safe in HTML (numbers need no escaping; anything else is escaped)."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return str(v)
    return "–" if v is None else escape(str(v))


def node_row(r: dict, now: float) -> str:
    """One row of the node table. Kept lean (a page may hold thousands): cells by position
    (status.js: CELLS), each sensor a span whose name CSS shows from data-s, sparklines
    drawn by the script for the rows in view."""
    e = escape
    causes = ", ".join(f"{k} {v}" for k, v in sorted(r["causes"].items()))
    readings = "".join(f'<span data-s="{e(k)}">{fmt(v)}</span>' for k, v in r["last"].items())  # numbers: no markup
    extra = " ".join(f"{e(str(k))}: {fmt(v)}" for k, v in r["extra"].items())
    quality = f"{100 * r['quality']:.1f} %" if r["quality"] is not None else "–"
    return (f'<tr data-node="{e(r["node"])}" data-last-seen="{r["last_seen"]}"{" class=late" if late(r, now) else ""}>'
            f'<td>{e(r["node"])}<td>{e(r["transport"])}<td>{ago(now - r["last_seen"] if r["last_seen"] else None)}'
            f'<td>{r["per_min"]:.1f}<td>{r["frames"]}<td>{quality}'
            f'<td>{r["rejected"]}{f" ({e(causes)})" if causes else ""}<td>{fmt(r["battery"])}'
            f'<td>{readings}<td>{extra}</tr>')


def gateway_panel(g: dict) -> str:
    e = escape
    disk = (f"{size(g['disk_free'])} free of {size(g['disk_total'])}" if g["disk_total"] else "unknown")
    warnings = "".join(f"<li>{e(w)}</li>" for w in g["warnings"]) or "<li class=none>none</li>"
    return (f'<dl><dt>version</dt><dd data-k="version">{e(g["version"])}</dd>'
            f'<dt>up</dt><dd data-k="uptime">{duration(g["uptime"])}</dd>'
            f'<dt>tasks</dt><dd data-k="ok">{"all running" if g["ok"] else "A TASK DIED: see the log"}</dd>'
            f'<dt>spool disk</dt><dd data-k="disk">{e(disk)}</dd></dl>'
            f'<h3>configuration warnings</h3><ul data-k="warnings">{warnings}</ul>')


def uplink_panel(u: dict) -> str:
    e = escape
    dropped = ", ".join(f"{k} {v}" for k, v in u["dropped"].items()) or "none"
    rejects = ", ".join(f"{k} {v}" for k, v in sorted(u["rejects"].items())) or "none"
    oldest = "–" if u["oldest_age"] is None else ago(u["oldest_age"]).replace(" ago", "")
    return (f'<dl><dt>MQTT {e(u["broker"])}</dt><dd data-k="connected" class="{"ok" if u["connected"] else "bad"}">'
            f'{"connected" if u["connected"] else "DISCONNECTED"}</dd>'
            f'<dt>spool depth</dt><dd data-k="depth">{u["depth"]} records, {size(u["bytes"])}</dd>'
            f'<dt>oldest unsent</dt><dd data-k="oldest">{oldest}</dd>'
            f'<dt>dropped</dt><dd data-k="dropped">{e(dropped)}</dd>'
            f'<dt>frames rejected</dt><dd data-k="rejects">{e(rejects)}</dd></dl>')

