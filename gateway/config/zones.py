"""`[zones]` in gateway.toml: the plant map's points and the graph travel follows
(`gateway.decisions.zones.ZoneMap`; docs/matching.md)."""
from __future__ import annotations

import math

from gateway.config.problems import Problems
from gateway.decisions.zones import Point, ZoneMap
from gateway.errors import ConfigError


def position(value, where: str, example: str) -> Point:
    """A position [x, y] in plant metres; ConfigError naming `where` and the example otherwise."""
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        raise ConfigError(where, f"must be a position [x, y] in metres, got {value!r}", f"write {example}")
    return float(value[0]), float(value[1])


def parse(raw) -> ZoneMap:
    """Validate the `[zones]` table; every wrong point and edge is reported (ConfigErrors)."""
    if not isinstance(raw, dict):
        raise ConfigError("[zones]", "must be a table", "write [zones] with points = {name = [x, y]} and edges")
    extra = set(raw) - {"points", "edges"}
    if extra:
        raise ConfigError(f"[zones] {sorted(extra)[0]}", "unknown key",
                          "zones has two keys: points = {name = [x, y], …} and edges = [[a, b], …]")
    raw_points = raw.get("points", {})
    if not isinstance(raw_points, dict):
        raise ConfigError("[zones] points", "must be a table of name = [x, y]", "write points = { hall = [0, 0] }")
    problems = Problems()
    points = {}
    for name, p in raw_points.items():
        xy = problems.take(position, p, f"[zones] points.{name}", f"{name} = [12.5, 4.0]")
        if xy is not None:
            points[name] = xy
    edges = []
    raw_edges = raw.get("edges", [])
    if not isinstance(raw_edges, list):
        problems.add(ConfigError("[zones] edges", "must be a list", 'write edges = [["hall", "dock"]]'))
        raw_edges = []
    for i, e in enumerate(raw_edges):
        edge = problems.take(_edge, e, i, points)
        if edge is not None:
            edges.append(edge)
    if edges and len(points) < 2:
        problems.add(ConfigError("[zones] points", "a graph needs at least two points",
                                 "declare the points edges join"))
    problems.raise_any()
    return ZoneMap(points, tuple(edges))


def _edge(e, i: int, points: dict) -> tuple:
    where = f"[zones] edges[{i}]"
    if not isinstance(e, list) or len(e) not in (2, 3):
        raise ConfigError(where, f"must be [a, b] or [a, b, length], got {e!r}", 'write ["hall", "dock"]')
    a, b = e[0], e[1]
    for name in (a, b):
        if name not in points:
            raise ConfigError(where, f"{name!r} is not a zone point",
                              f"declare it in [zones] points, or use one of: {', '.join(sorted(points)) or 'none'}")
    if a == b:
        raise ConfigError(where, f"joins {a!r} to itself", "remove it")
    length = math.dist(points[a], points[b])
    if len(e) == 3:
        if isinstance(e[2], bool) or not isinstance(e[2], (int, float)) or not (e[2] >= 0 and math.isfinite(e[2])):
            raise ConfigError(where, f"length must be a number of metres >= 0, got {e[2]!r}",
                              "leave it out to use the straight distance")
        length = float(e[2])
    return a, b, length
