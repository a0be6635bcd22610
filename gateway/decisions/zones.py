"""The plant map: positions in metres on the plant's own x, y coordinates, and the
optional zone graph that travel follows.

Configuration (`[zones]`, optional; validated by gateway/config/zones.py):

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
