"""The search space: AMC's layer embedding over graph_ops channel groups.

AMC's agent decides one keep ratio per prunable layer, walking the network in order; the state is
a row of hand-crafted features of the layer about to be pruned.  Here a "layer" is a prunable
:class:`graph_ops.ChannelGroup` (a residual stage is one decision, not one per Conv), ordered by
the first node that produces its channels, which is topological order.

Features (``FEATURES``; 11 per row)
-----------------------------------
``index, type, n_in, n_out, fmap, stride, kernel, macs, reduced, rest, a_prev``.

* The paper lists 11: ``t, n, c, h, w, stride, k, FLOPs[t], reduced, rest, a_{t-1}``.
* The official code uses 10: ``index, type, in, out, stride, kernel, weight count, reduced, rest,
  a_{t-1}``.

We take the paper's set (MACs of the layer and the feature-map size tell the agent where the
compute is, which is what a MACs budget trades against) with two changes: the code's conv/fc
``type`` bit is added because the same group table covers Conv, Gemm and MatMul models, and the
paper's separate ``h, w`` become one ``fmap`` = input spatial area (one number also covers 1-D
and 3-D convolutions and non-square inputs; the features are normalised anyway).  The code's
weight count is dropped: it is nearly ``n_in x n_out x k`` and adds no information.

Static features (everything but the last three) are min-max normalised per feature over the
groups (a constant feature becomes 0), as in the official code.  The dynamic ones are fractions
already: ``reduced`` = MACs removed so far / original MACs, ``rest`` = MACs of nodes touching a
later group / original MACs, ``a_prev`` = the previous (budget-clipped) keep ratio.

A group's "layer" is its first producer (the Conv/Gemm that creates its channels); ``macs`` is the
MACs of every node whose input or output channels belong to the group (``group_macs``), since
pruning the group changes all of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from graph_ops import (
    Analysis,
    Counts,
    PrunePlan,
    count,
    group_macs,
    importance,
    keep_count,
    make_plan,
)

__all__ = [
    "DYNAMIC_FEATURES",
    "FEATURES",
    "LayerSpace",
    "MacCounter",
    "build_space",
]

FEATURES: tuple[str, ...] = (
    "index", "type", "n_in", "n_out", "fmap", "stride", "kernel", "macs",
    "reduced", "rest", "a_prev",
)
DYNAMIC_FEATURES: tuple[str, ...] = ("reduced", "rest", "a_prev")
_N_STATIC = len(FEATURES) - len(DYNAMIC_FEATURES)

_FC_OPS = frozenset({"Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"})


@dataclass(frozen=True, eq=False)
class MacCounter:
    """Exact MACs of a keep mask, without ``count``'s params pass, vectorised over nodes.

    The action wall evaluates the cost of a policy tens of times per step; ``graph_ops.count``
    also counts params, which dominates its time on MobileNet-sized graphs.  This precomputes,
    for every MAC term, the channel classes of its input and output layouts and applies the same
    formula as ``graph_ops.count.term_macs`` (``coef * n_in * n_out // groups``, depthwise
    ``coef * n_out``).  ``tests/test_search.py`` checks it against ``count`` on random plans.
    """

    coefs: np.ndarray  # int64 per term
    groups: np.ndarray
    depthwise: np.ndarray  # bool
    full_in: np.ndarray  # n_in, n_out when nothing is pruned (or the layout is unknown)
    full_out: np.ndarray
    in_cls: np.ndarray  # class ids of all input layouts, concatenated
    in_seg: np.ndarray  # term index of each entry of in_cls
    out_cls: np.ndarray
    out_seg: np.ndarray

    @classmethod
    def from_analysis(cls, analysis: Analysis) -> MacCounter:
        terms = analysis.mac_terms
        if any(t.coef is None for t in terms):
            raise ValueError(
                "MACs need concrete spatial sizes: analyze the model with input_shapes=...")

        def concat(layouts: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
            ids = [analysis.raw_to_class[lay] for lay in layouts if lay is not None]
            seg = [np.full(lay.size, i) for i, lay in enumerate(layouts) if lay is not None]
            if not ids:
                return np.zeros(0, np.int64), np.zeros(0, np.int64)
            return np.concatenate(ids).astype(np.int64), np.concatenate(seg).astype(np.int64)

        in_cls, in_seg = concat([t.in_layout for t in terms])
        out_cls, out_seg = concat([t.out_layout for t in terms])
        return cls(
            coefs=np.array([t.coef for t in terms], dtype=np.int64),
            groups=np.array([t.groups for t in terms], dtype=np.int64),
            depthwise=np.array([t.depthwise for t in terms], dtype=bool),
            full_in=np.array([t.n_in for t in terms], dtype=np.int64),
            full_out=np.array([t.n_out for t in terms], dtype=np.int64),
            in_cls=in_cls, in_seg=in_seg, out_cls=out_cls, out_seg=out_seg,
        )

    def __call__(self, keep: np.ndarray | None = None) -> int:
        n_in, n_out = self.full_in, self.full_out
        if keep is not None:
            n_in = self._n(self.full_in, self.in_cls, self.in_seg, keep)
            n_out = self._n(self.full_out, self.out_cls, self.out_seg, keep)
        dense = self.coefs * n_in * n_out // self.groups
        return int(np.where(self.depthwise, self.coefs * n_out, dense).sum())

    @staticmethod
    def _n(full: np.ndarray, cls_ids: np.ndarray, seg: np.ndarray, keep: np.ndarray
           ) -> np.ndarray:
        """Kept channels per term: the full count where the term has no layout."""
        n = full.copy()
        has = np.zeros(full.size, dtype=bool)
        has[seg] = True
        n[has] = 0
        np.add.at(n, seg[keep[cls_ids]], 1)
        return n


@dataclass(frozen=True, eq=False)
class LayerSpace:
    """The prunable groups of one model in decision order, with everything the search needs.

    Built once per model by :func:`build_space`; immutable afterwards.  Ratios are always given
    in decision order (``ratios[t]`` is the keep ratio of ``group_ids[t]``); a shorter sequence
    leaves the remaining groups unpruned.
    """

    analysis: Analysis
    score: np.ndarray
    group_ids: tuple[str, ...]
    sizes: tuple[int, ...]
    blocks: tuple[int, ...]
    round_to: int
    lbound: float
    rbound: float
    raw_features: np.ndarray  # (T, 8) static features before normalisation
    static: np.ndarray  # (T, 8) min-max normalised
    rest_frac: np.ndarray  # (T,) MACs of nodes touching a later group / total
    original: Counts
    macs: MacCounter
    # count -> kept positions (canonical order) of each group, for counts in [k(lbound), size)
    _kept: tuple[dict[int, np.ndarray], ...] = field(repr=False)

    @property
    def num_groups(self) -> int:
        return len(self.group_ids)

    @property
    def num_features(self) -> int:
        return len(FEATURES)

    def keep_counts(self, ratios: Sequence[float]) -> tuple[int, ...]:
        """Channels kept per group under graph_ops' rounding (the evaluation cache key)."""
        out = []
        for t, size in enumerate(self.sizes):
            r = float(ratios[t]) if t < len(ratios) else 1.0
            out.append(keep_count(size, r, self.round_to, self.blocks[t]))
        return tuple(out)

    def policy(self, ratios: Sequence[float]) -> dict[str, float]:
        """The rounded policy ``{group id: kept / size}``: ``make_plan`` maps it back to exactly
        the same keep counts, so evaluators and cache agree on what a policy means."""
        counts = self.keep_counts(ratios)
        return {gid: k / s for gid, k, s in zip(self.group_ids, counts, self.sizes, strict=True)}

    def ratios_of(self, policy: Mapping[str, float]) -> list[float]:
        """Inverse of :meth:`policy`: ratios in decision order (missing groups keep 1.0)."""
        return [float(policy.get(gid, 1.0)) for gid in self.group_ids]

    def options(self, t: int) -> list[int]:
        """Achievable keep counts of group ``t`` within ``[lbound, 1]``, ascending."""
        return sorted(set(self._kept[t]) | {self.sizes[t]})

    def keep_mask(self, counts: Sequence[int]) -> np.ndarray:
        """Keep mask over channel classes for per-group keep counts; identical to
        ``make_plan(...).keep`` (each group's top-k by importance), but without re-validating."""
        keep = self.analysis.keep_all()
        for t, k in enumerate(counts):
            if k >= self.sizes[t]:
                continue
            positions = self._kept[t].get(k)
            if positions is None:
                positions = self._plan_positions(t, k)
            cls = self.analysis.groups[self._group_index(t)].classes
            mask = np.zeros(self.sizes[t], dtype=bool)
            mask[positions] = True
            keep[cls[~mask]] = False
        return keep

    def plan(self, ratios: Sequence[float]) -> PrunePlan:
        """The graph_ops plan of ``ratios`` (the one ``apply`` consumes)."""
        return make_plan(self.analysis, self.policy(ratios), self.score, round_to=self.round_to)

    def macs_of(self, ratios: Sequence[float]) -> int:
        return self.macs(self.keep_mask(self.keep_counts(ratios)))

    def counts_of(self, ratios: Sequence[float]) -> Counts:
        return count(self.analysis, self.keep_mask(self.keep_counts(ratios)))

    def observation(self, t: int, chosen: Sequence[float]) -> np.ndarray:
        """State row of group ``t`` given the ratios already chosen for groups ``< t``."""
        t = min(t, self.num_groups - 1)
        total = self.original.macs or 1
        reduced = (total - self.macs_of(chosen[:t])) / total
        a_prev = float(chosen[t - 1]) if t > 0 and len(chosen) >= t else 1.0
        row = np.concatenate([self.static[t], [reduced, self.rest_frac[t], a_prev]])
        return row.astype(np.float32)

    def _group_index(self, t: int) -> int:
        return self.analysis.group_by_id[self.group_ids[t]].index

    def _plan_positions(self, t: int, k: int) -> np.ndarray:
        gid = self.group_ids[t]
        plan = make_plan(self.analysis, {gid: k / self.sizes[t]}, self.score,
                         round_to=self.round_to)
        return plan.kept[gid]


def _min_max(x: np.ndarray) -> np.ndarray:
    lo = x.min(axis=0, keepdims=True)
    span = x.max(axis=0, keepdims=True) - lo
    return np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), 0.0)


def _spatial(shape: Sequence | None) -> int:
    """Product of the spatial dims of an N, C, *spatial shape (1 for none, 0 if unknown)."""
    if not shape or len(shape) <= 2:
        return 1
    dims = list(shape[2:])
    if not all(isinstance(d, int) and d > 0 for d in dims):
        return 0
    return int(np.prod(dims))


def _attr_ints(node: onnx.NodeProto, name: str) -> list[int]:
    for a in node.attribute:
        if a.name == name:
            return list(a.ints)
    return []


def build_space(
    analysis: Analysis,
    *,
    score: np.ndarray | None = None,
    round_to: int = 8,
    lbound: float = 0.2,
    rbound: float = 1.0,
) -> LayerSpace:
    """Build the search space of an analysed model.

    Args:
        analysis: ``graph_ops.analyze`` result with concrete spatial sizes (MACs must be known).
        score: channel importance (default ``importance(analysis, "l1")``, AMC's criterion).
        round_to: keep counts rounded up to a multiple of this (AMC's ``channel_round`` = 8).
        lbound, rbound: the range of keep ratios the agent may choose.

    Raises:
        ValueError: no prunable group, unknown MACs, or bounds outside ``0 < lbound <= rbound
            <= 1``.
    """
    if not (0.0 < lbound <= rbound <= 1.0):
        raise ValueError(f"need 0 < lbound <= rbound <= 1, got lbound={lbound}, rbound={rbound}")
    if round_to < 1:
        raise ValueError(f"round_to must be >= 1, got {round_to}")
    if score is None:
        score = importance(analysis, "l1")
    original = count(analysis)
    if original.macs is None:
        raise ValueError("MACs are unknown: analyze the model with input_shapes=...")
    macs = MacCounter.from_analysis(analysis)

    # Decision order: first producer node of each prunable group (topological order).
    first_birth: dict[int, int] = {}
    for b in analysis.ctx.births:
        gi = int(analysis.class_group[analysis.raw_to_class[b.layout[0]]])
        if gi not in first_birth or b.node_index < first_birth[gi]:
            first_birth[gi] = b.node_index
    groups = sorted(analysis.prunable_groups,
                    key=lambda g: (first_birth.get(g.index, math.inf), g.index))
    if not groups:
        raise ValueError("the model has no prunable channel group")

    term_of = {t.node_index: t for t in analysis.mac_terms}
    gmacs = group_macs(analysis)
    # Groups each MAC term touches, for the static ``rest`` feature.
    term_groups: list[tuple[int, set[int]]] = []
    for t in analysis.mac_terms:
        touched: set[int] = set()
        for lay in (t.in_layout, t.out_layout):
            if lay is not None:
                touched.update(np.unique(
                    analysis.class_group[analysis.raw_to_class[lay]]).tolist())
        term_groups.append((_term_macs(t), touched))

    view = analysis.view
    rows = []
    rest = []
    for i, g in enumerate(groups):
        node_index = first_birth.get(g.index)
        node = view.nodes[node_index] if node_index is not None else None
        term = term_of.get(node_index) if node_index is not None else None
        is_fc = node is not None and node.op_type in _FC_OPS
        n_in = term.n_in if term is not None else 0
        fmap = 1
        stride = 1
        kernel = 1
        if node is not None and not is_fc:
            fmap = _spatial(view.shape(node.input[0]) if node.input else None)
            strides = _attr_ints(node, "strides")
            stride = max(strides) if strides else 1
            w = view.const(node.input[1]) if len(node.input) > 1 else None
            kernel = int(np.prod(w.shape[2:])) if w is not None and w.ndim > 2 else 1
        if is_fc:
            stride = 0  # as the official code: fc layers have stride 0, kernel 1
        rows.append([i, 1.0 if is_fc else 0.0, n_in, g.size, fmap, stride, kernel,
                     gmacs.get(g.index, 0)])
        later = {gg.index for gg in groups[i + 1:]}
        rest.append(sum(v for v, touched in term_groups if touched & later))
    raw = np.asarray(rows, dtype=np.float64)
    total = float(original.macs) or 1.0

    kept: list[dict[int, np.ndarray]] = []
    for g in groups:
        opts: dict[int, np.ndarray] = {}
        lo = keep_count(g.size, lbound, round_to, g.blocks)
        seen = set()
        for k in range(lo, g.size + 1):
            kk = keep_count(g.size, k / g.size, round_to, g.blocks)
            if kk in seen or kk >= g.size:
                continue
            seen.add(kk)
            plan = make_plan(analysis, {g.id: kk / g.size}, score, round_to=round_to)
            opts[kk] = plan.kept[g.id]
        kept.append(opts)

    return LayerSpace(
        analysis=analysis,
        score=score,
        group_ids=tuple(g.id for g in groups),
        sizes=tuple(g.size for g in groups),
        blocks=tuple(g.blocks for g in groups),
        round_to=round_to,
        lbound=lbound,
        rbound=rbound,
        raw_features=raw,
        static=_min_max(raw),
        rest_frac=np.asarray(rest, dtype=np.float64) / total,
        original=original,
        macs=macs,
        _kept=tuple(kept),
    )


def _term_macs(term) -> int:
    if term.coef is None:
        return 0
    if term.depthwise:
        return int(term.coef * term.n_out)
    return int(term.coef * term.n_in * term.n_out // term.groups)
