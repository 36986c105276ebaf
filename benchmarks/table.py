"""The one table every benchmark prints into."""

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    benchmark: str
    ours: str  # e.g. "2.1 µs/eval" — a median
    peer: str = "—"  # the peer measured side by side in the same run, if any
    ratio: str = "—"  # e.g. "7.3× faster"
    target: str = "—"
    passed: bool | None = None  # None: no target to meet


def timing_samples(fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1) -> list[float]:
    """Seconds per call of ``fn``, ``repeats`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def median_seconds(fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1) -> float:
    return statistics.median(timing_samples(fn, repeats=repeats, warmup=warmup))


def render(rows: list[Row]) -> str:
    header = ("benchmark", "ours (median)", "peer (median)", "ratio", "target", "met")
    body = [
        (r.benchmark, r.ours, r.peer, r.ratio, r.target, {True: "yes", False: "NO", None: "—"}[r.passed])
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), "-+-".join("-" * w for w in widths)]
    lines += [fmt.format(*line) for line in body]
    return "\n".join(lines)
