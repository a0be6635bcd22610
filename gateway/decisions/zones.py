"""The plant map: positions in metres on the plant's own x, y coordinates, and the
optional zone graph that travel follows.

Configuration (`[zones]`, optional):

    [zones]
    points = { workshop = [0, 0], hall = [20, 0], pumps = [20, 12] }
    edges = [["workshop", "hall"], ["hall", "pumps", 14.5]]   # [a, b] or [a, b, length in m]

Without zones (or without edges) travel is a straight line. With them, a trip
from a to b goes straight to the zone point nearest a, along the shortest path
of the graph (Dijkstra; an edge is as long as the straight line between its
points unless a length is given) to the zone point nearest b, then straight to
b; when both ends are nearest the same point it is the straight line. Points
the graph does not connect make the trip impossible (infinite).
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from gateway.errors import ConfigError

Point = tuple[float, float]


@dataclass(frozen=True)
class ZoneMap:
    points: dict = field(default_factory=dict)   # name -> (x, y)
    edges: tuple = ()                            # (a, b, length)

    def __post_init__(self):
        object.__setattr__(self, "_names", sorted(self.points))
        object.__setattr__(self, "_paths", self._all_pairs() if self.edges else {})

    @property
    def routed(self) -> bool:
        """True when travel follows the graph."""
        return bool(self.edges)

    def _all_pairs(self) -> dict:
        adj: dict[str, list] = {n: [] for n in self.points}
        for a, b, length in self.edges:
            adj[a].append((length, b))
            adj[b].append((length, a))
        paths = {}
        for src in self.points:
            dist, prev = {src: 0.0}, {src: None}
            heap = [(0.0, src)]
            while heap:
                d, u = heapq.heappop(heap)
                if d > dist[u]:
                    continue
                for length, v in adj[u]:
                    if d + length < dist.get(v, math.inf):
                        dist[v], prev[v] = d + length, u
                        heapq.heappush(heap, (d + length, v))
            for dst, d in dist.items():
                hops, n = [], dst
                while n is not None:
                    hops.append(n)
                    n = prev[n]
                paths[(src, dst)] = (d, tuple(reversed(hops)))
        return paths

    def nearest(self, p: Point) -> str:
        return min(self._names, key=lambda n: (math.dist(p, self.points[n]), n))

    def distance(self, a: Point, b: Point) -> float:
        """Metres travelled from a to b (inf when the graph does not connect them)."""
        if not self.edges:
            return math.dist(a, b)
        za, zb = self.nearest(a), self.nearest(b)
        if za == zb:
            return math.dist(a, b)
        path = self._paths.get((za, zb))
        if path is None:
            return math.inf
        return math.dist(a, self.points[za]) + path[0] + math.dist(self.points[zb], b)

    def route(self, a: Point, b: Point) -> list[Point]:
        """The waypoints of the trip from a to b, ending at b ([] when impossible)."""
        if not self.edges:
            return [b]
        za, zb = self.nearest(a), self.nearest(b)
        if za == zb:
            return [b]
        path = self._paths.get((za, zb))
        if path is None:
            return []
        return [self.points[n] for n in path[1]] + [b]


def _xy(value, where: str, example: str) -> Point:
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        raise ConfigError(where, f"must be a position [x, y] in metres, got {value!r}", f"write {example}")
    return float(value[0]), float(value[1])


def parse(raw) -> ZoneMap:
    """Validate the `[zones]` table."""
    if not isinstance(raw, dict):
        raise ConfigError("[zones]", "must be a table", "write [zones] with points = {name = [x, y]} and edges")
    extra = set(raw) - {"points", "edges"}
    if extra:
        raise ConfigError(f"[zones] {sorted(extra)[0]}", "unknown key",
                          "zones has two keys: points = {name = [x, y], …} and edges = [[a, b], …]")
    raw_points = raw.get("points", {})
    if not isinstance(raw_points, dict):
        raise ConfigError("[zones] points", "must be a table of name = [x, y]", "write points = { hall = [0, 0] }")
    points = {name: _xy(p, f"[zones] points.{name}", f"{name} = [12.5, 4.0]") for name, p in raw_points.items()}
    edges = []
    raw_edges = raw.get("edges", [])
    if not isinstance(raw_edges, list):
        raise ConfigError("[zones] edges", "must be a list", 'write edges = [["hall", "dock"]]')
    for i, e in enumerate(raw_edges):
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
        edges.append((a, b, length))
    if edges and len(points) < 2:
        raise ConfigError("[zones] points", "a graph needs at least two points", "declare the points edges join")
    return ZoneMap(points, tuple(edges))
