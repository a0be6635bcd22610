"""The site map: the gateways' zone graphs joined into one, for the fleet dispatcher's travel costs.

Configuration (`site.toml`; docs/matching.md, "The site map"):

    links = [["line1:pumps", "line2:hall", 45.0]]        # corridors between lines: [a, b] or [a, b, metres]

    [gateways.line1]
    points = { workshop = [2, 2], pumps = [20, 12] }     # line1's [zones] points (site metres)
    edges = [["workshop", "pumps"]]                      # and edges, as in its gateway.toml

    [gateways.line2]
    points = { hall = [60, 2], press = [70, 12] }
    edges = [["hall", "press"]]

Every gateway of a site uses the same plant coordinates (metres, one origin): a
gateway's `[zones]` table can be pasted under `[gateways.<id>]` as it is. Points are
named `<gateway>:<point>` in the joined graph; `links` join points of different
gateways. A gateway with no entry, or an empty map, means straight-line travel.

Usage: `SiteMap.load(path)` or `SiteMap.from_dict(raw)`; `.zones` is a
`gateway.decisions.zones.ZoneMap` (`distance(a, b)`, `route(a, b)`).

Errors: every mistake is reported at once (`ConfigErrors`), each naming the key at
fault and the fix, e.g. `[gateways.line2] edges[0]: 'hal' is not a zone point (fix: …)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from gateway.config import zones as zone_config
from gateway.config.problems import Problems, read_toml
from gateway.decisions.zones import ZoneMap
from gateway.errors import ConfigError
from gateway.protocol.names import NODE_NAME

_TOP = ("gateways", "links")


@dataclass(frozen=True)
class SiteMap:
    zones: ZoneMap
    gateways: tuple = ()

    @classmethod
    def load(cls, path) -> "SiteMap":
        return cls.from_dict(read_toml(path, "check the site map's path"))

    @classmethod
    def from_dict(cls, raw: dict) -> "SiteMap":
        problems = Problems()
        for key in sorted(set(raw) - set(_TOP)):
            problems.add(ConfigError(f"[{key}]", "unknown key", "a site map has [gateways.<id>] tables and links"))
        gws = raw.get("gateways", {})
        if not isinstance(gws, dict):
            problems.add(ConfigError("[gateways]", "must be a table", "write [gateways.line1] with points and edges"))
            gws = {}
        points: dict = {}
        edges: list = []
        for gw, body in gws.items():
            where = f"[gateways.{gw}]"
            if not NODE_NAME.match(gw):
                problems.add(ConfigError(where, "is not a gateway id", "use the gateway's [gateway] id"))
                continue
            try:
                zm = zone_config.parse(body)
            except ConfigError as exc:
                for e in getattr(exc, "errors", [exc]):
                    problems.add(ConfigError(e.key.replace("[zones]", where), e.problem, e.fix))
                try:  # its points still exist for the links (only its edges were wrong)
                    zm = zone_config.parse({"points": body.get("points", {})} if isinstance(body, dict) else {})
                except ConfigError:
                    continue
                points.update({f"{gw}:{name}": xy for name, xy in zm.points.items()})
                continue
            points.update({f"{gw}:{name}": xy for name, xy in zm.points.items()})
            edges += [(f"{gw}:{a}", f"{gw}:{b}", length) for a, b, length in zm.edges]
        links = raw.get("links", [])
        if not isinstance(links, list):
            problems.add(ConfigError("links", "must be a list", 'write links = [["line1:pumps", "line2:hall"]]'))
            links = []
        for i, link in enumerate(links):
            edge = problems.take(_link, link, i, points)
            if edge is not None:
                edges.append(edge)
        problems.raise_any()
        return cls(ZoneMap(points, tuple(edges)), tuple(sorted(gws)))


def _link(link, i: int, points: dict) -> tuple:
    where = f"links[{i}]"
    if not isinstance(link, list) or len(link) not in (2, 3):
        raise ConfigError(where, f"must be [a, b] or [a, b, metres], got {link!r}", 'write ["line1:pumps", "line2:hall"]')
    a, b = link[0], link[1]
    for name in (a, b):
        if name not in points:
            gw = name.split(":", 1)[0] if isinstance(name, str) else ""
            known = sorted(p for p in points if p.startswith(gw + ":")) or sorted(points)
            raise ConfigError(where, f"{name!r} is not a point of the site map",
                              f"name points <gateway>:<point>, e.g. {', '.join(known[:4]) or 'none declared'}")
    if a.split(":", 1)[0] == b.split(":", 1)[0]:
        raise ConfigError(where, f"joins two points of gateway {a.split(':', 1)[0]!r}",
                          f"put it in [gateways.{a.split(':', 1)[0]}] edges; links join different gateways")
    length = math.dist(points[a], points[b])
    if len(link) == 3:
        v = link[2]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 and math.isfinite(v)):
            raise ConfigError(where, f"length must be a number of metres >= 0, got {v!r}",
                              "leave it out to use the straight distance")
        length = float(v)
    return a, b, length
