"""Shared by the benchmarks."""
import math
import time


def best_time(fn, repeat: int = 3) -> float:
    """The shortest of `repeat` runs of fn(), in seconds (the least disturbed by a noisy machine)."""
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
