"""Channel importance: norms of producer weights, summed over a group's producers."""

from __future__ import annotations

from typing import Literal

import numpy as np

from .analyze import Analysis

__all__ = ["importance", "Criterion"]

Criterion = Literal["l1", "l2"]


def importance(analysis: Analysis, criterion: Criterion = "l1") -> np.ndarray:
    """Score per channel class: the L1 (or L2) norm of each producer's weight slice for that
    channel, summed over all producers that create it (He et al. 2017; AMC keeps the largest)."""
    if criterion not in ("l1", "l2"):
        raise ValueError(f"unknown criterion '{criterion}' (use l1 or l2)")
    cache = analysis.__dict__.setdefault("_importance", {})
    if criterion not in cache:
        cache[criterion] = _importance(analysis, criterion)
        cache[criterion].setflags(write=False)
    return cache[criterion]


def _importance(analysis: Analysis, criterion: Criterion) -> np.ndarray:
    classes: list[np.ndarray] = []
    norms: list[np.ndarray] = []
    for birth in analysis.ctx.births:
        if birth.weight is None:
            continue
        name, axis = birth.weight
        w = analysis.view.const(name)
        if w is None or w.ndim == 0 or w.shape[axis] != birth.layout.shape[0]:
            continue
        # Sum over the other axes in place: np.moveaxis is a fixed Python-level cost per call.
        others = tuple(i for i in range(w.ndim) if i != axis)
        if criterion == "l1":
            per = np.abs(w).sum(axis=others, dtype=np.float64)
        else:
            per = np.sqrt(np.square(w, dtype=np.float64).sum(axis=others))
        classes.append(analysis.raw_to_class[birth.layout])
        norms.append(per)
    if not classes:
        return np.zeros(analysis.num_classes, dtype=np.float64)
    # One weighted bincount instead of an np.add.at per producer (a fixed cost per call that
    # dominates on small graphs); float64 sums in the same order per class.
    return np.bincount(np.concatenate(classes), np.concatenate(norms),
                       minlength=analysis.num_classes)
