"""Params and MACs, per node, per group and in total, for the original model or a keep mask.

MACs count Conv, ConvTranspose, Gemm and MatMul (multiply-accumulates at the analysed input
shapes: a dynamic batch counts as 1, a static or pinned one as the whole batch), the convention
of torch.utils.flop_counter (FLOPs = 2 x MACs). Params count floating-point constants (weights,
biases and normalisation parameters and statistics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .analyze import Analysis
from .rules import MacTerm

__all__ = ["Counts", "count", "node_macs", "group_macs"]


@dataclass(frozen=True)
class Counts:
    params: int
    macs: int | None  # None when some spatial size is unknown (pass input_shapes)


def _n(layout: np.ndarray | None, full: int, keep_raw: np.ndarray | None) -> int:
    if layout is None or keep_raw is None:
        return full
    return int(np.count_nonzero(keep_raw[layout]))


def term_macs(term: MacTerm, keep_raw: np.ndarray | None = None) -> int | None:
    if term.coef is None:
        return None
    n_out = _n(term.out_layout, term.n_out, keep_raw)
    if term.depthwise:
        return term.coef * n_out
    n_in = _n(term.in_layout, term.n_in, keep_raw)
    return term.coef * n_in * n_out // term.groups


def node_macs(analysis: Analysis, keep: np.ndarray | None = None) -> dict[int, int | None]:
    keep_raw = analysis.raw_keep(keep) if keep is not None else None
    return {t.node_index: term_macs(t, keep_raw) for t in analysis.mac_terms}


def total_macs(analysis: Analysis, keep: np.ndarray | None = None) -> int | None:
    keep_raw = analysis.raw_keep(keep) if keep is not None else None
    total = 0
    for t in analysis.mac_terms:
        v = term_macs(t, keep_raw)
        if v is None:
            return None
        total += v
    return total


def _param_names(analysis: Analysis) -> list[str]:
    view = analysis.view
    names = []
    for name, src in view.const_source.items():
        if src.kind == "derived":
            continue
        v = view.const(name)
        if v is not None and v.dtype.kind == "f" and name in view.consumers:
            names.append(name)
    return names


def total_params(analysis: Analysis, keep: np.ndarray | None = None) -> int:
    view = analysis.view
    keep_raw = analysis.raw_keep(keep) if keep is not None else None
    ratio: dict[str, list[tuple[int, int]]] = {}
    if keep_raw is not None:
        for (name, axis), sl in analysis.ctx.slices.items():
            ratio.setdefault(name, []).append((axis, _n(sl.layout, sl.layout.size, keep_raw)))
        for gs in analysis.ctx.grouped:
            ratio.setdefault(gs.tensor, []).append((0, _n(gs.out_layout, 0, keep_raw)))
            per = _n(gs.in_layout, 0, keep_raw) // gs.groups
            ratio[gs.tensor].append((1, per))
    total = 0
    for name in _param_names(analysis):
        shape = list(view.const(name).shape)
        for axis, n in ratio.get(name, ()):
            shape[axis] = n
        total += math.prod(shape)
    return total


def count(analysis: Analysis, keep: np.ndarray | None = None) -> Counts:
    return Counts(total_params(analysis, keep), total_macs(analysis, keep))


def group_macs(analysis: Analysis) -> dict[int, int]:
    """MACs of the nodes whose input or output channels belong to each group (a node counts
    toward every group it touches)."""
    out: dict[int, int] = {}
    for t in analysis.mac_terms:
        v = term_macs(t)
        if not v:
            continue
        touched: set[int] = set()
        for lay in (t.in_layout, t.out_layout):
            if lay is not None:
                touched.update(np.unique(analysis.class_group[analysis.raw_to_class[lay]]).tolist())
        for gi in touched:
            out[gi] = out.get(gi, 0) + v
    return out


def prunable_mac_share(analysis: Analysis) -> float | None:
    """Share of MACs in nodes with at least one prunable side."""
    total = 0
    prunable = 0
    frozen_groups = np.array([not g.prunable for g in analysis.groups], dtype=bool)
    for t in analysis.mac_terms:
        v = term_macs(t)
        if v is None:
            return None
        total += v
        for lay in (t.in_layout, t.out_layout):
            if lay is None:
                continue
            gs = analysis.class_group[analysis.raw_to_class[lay]]
            if frozen_groups.size and not frozen_groups[gs].all():
                prunable += v
                break
    return prunable / total if total else 0.0
