"""Timing helpers for the benchmarks: medians of repeated runs, ratios in the same process."""

from __future__ import annotations

import statistics
import time


def interleaved_medians(fns: dict, repeats: int = 7, warmup: int = 1) -> dict:
    """Median seconds of each function, run in turns (A B A B ...): drift in the machine's speed,
    which is large on shared 2-core machines, then hits all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])
