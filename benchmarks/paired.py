"""Is an accuracy difference between two pruned models more than the test set's noise?

The latency benchmarks call a search's result "as accurate" as a competitor's by comparing two
top-1 scores on a few hundred held-out samples, where one sample is a fifth of a point.  Two
models scored on the same samples are paired: only the samples where they disagree say which
is better, and the exact McNemar test turns those counts into a p-value.  A verdict decided by
a difference the test cannot tell from chance is reported as such, next to the verdict itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["mcnemar_p", "paired", "deciding_point"]


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: ``only_a`` samples right only for model A, ``only_b``
    right only for B (under the null each discordant sample is a fair coin)."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def paired(hits_a: np.ndarray, hits_b: np.ndarray) -> tuple[int, int, float]:
    """``(right only for A, right only for B, p)`` over the same samples."""
    a = np.asarray(hits_a, bool)
    b = np.asarray(hits_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"hits over different samples: {a.shape} and {b.shape}")
    only_a = int(np.count_nonzero(a & ~b))
    only_b = int(np.count_nonzero(b & ~a))
    return only_a, only_b, mcnemar_p(only_a, only_b)


def deciding_point(points: Sequence[tuple[float, float, np.ndarray, str]], latency: float,
                   hits: np.ndarray) -> str:
    """What decided "faster at equal or better accuracy" against one competitor's points
    ``(latency, accuracy, hits, label)``, and whether the accuracy part is beyond noise.

    * A loss: the fastest point at least as accurate is also faster; the question is whether
      its accuracy edge is real.
    * A win: every faster point is less accurate; the question is whether the most accurate of
      them is really less accurate.
    """
    acc = float(np.mean(hits))
    ok = [p for p in points if p[1] >= acc - 1e-9]
    fastest_ok = min(ok, key=lambda p: p[0]) if ok else None
    if fastest_ok is not None and fastest_ok[0] < latency:
        lat, a, h, label = fastest_ok
        only_s, only_c, p = paired(hits, h)
        return (f"loss to {label} ({lat:.3f} @ {a:.4f}): {only_c - only_s:+d} samples for it "
                f"({only_c} vs {only_s} discordant), p = {p:.2f}")
    faster = [p for p in points if p[0] < latency]
    head = "win" if fastest_ok is not None else "more accurate than every point"
    if not faster:
        return f"{head}: no point is faster"
    lat, a, h, label = max(faster, key=lambda p: (p[1], -p[0]))
    only_s, only_c, p = paired(hits, h)
    return (f"{head}; the most accurate faster point, {label} ({lat:.3f} @ {a:.4f}): "
            f"{only_s - only_c:+d} samples for the search ({only_s} vs {only_c} "
            f"discordant), p = {p:.2f}")
