"""Channel rules: one small function per op family, looked up by op_type in a registry.

A rule reads the channel state of a node's inputs (:class:`Chan`: which axis carries channels and
which channel class sits at each position) and tells the :class:`Context` what the node does with
channels: creates new ones (a producer), couples them (a residual Add), slices constants, or must
freeze them. Ops that carry channels through untouched are plain data (``CHANNEL_PRESERVING``).
Anything not in the registry freezes the channels it touches: unknown means unprunable, never
silently wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

from ..edits import GroupedWeightSlice, SliceConst, ValueEdit
from ..graph import GraphView
from ..unionfind import UnionFind

__all__ = ["Chan", "Context", "Rule", "RuleRegistry", "DEFAULT_RULES", "CHANNEL_PRESERVING"]


@dataclass(frozen=True, eq=False)
class Chan:
    """Channel state of a tensor: ``layout[i]`` is the channel class at position i of ``axis``."""

    axis: int
    rank: int
    layout: np.ndarray

    @property
    def size(self) -> int:
        return int(self.layout.shape[0])

    def moved(self, axis: int, rank: int | None = None) -> Chan:
        return Chan(axis, self.rank if rank is None else rank, self.layout)


@dataclass(frozen=True, eq=False)
class Birth:
    """Channels created by a producer node (Conv output, Gemm output, ...)."""

    node_index: int
    tensor: str
    layout: np.ndarray
    weight: tuple[str, int] | None  # (constant, axis) whose slices score these channels


@dataclass(frozen=True, eq=False)
class MacTerm:
    """MACs of one node = coef * n_in * n_out / groups (``depthwise``: coef * n_out)."""

    node_index: int
    coef: int | None  # None when spatial sizes are unknown
    in_layout: np.ndarray | None
    out_layout: np.ndarray | None
    n_in: int
    n_out: int
    groups: int = 1
    depthwise: bool = False


@dataclass
class Context:
    """Mutable state of one analysis pass. Rules only call its methods."""

    g: GraphView
    uf: UnionFind = field(default_factory=UnionFind)
    state: dict[str, Chan] = field(default_factory=dict)
    births: list[Birth] = field(default_factory=list)
    consumers: list[tuple[int, np.ndarray]] = field(default_factory=list)
    freezes: list[tuple[np.ndarray, str, int]] = field(default_factory=list)
    blocks: list[tuple[np.ndarray, int, int]] = field(default_factory=list)
    slices: dict[tuple[str, int], SliceConst] = field(default_factory=dict)
    grouped: list[GroupedWeightSlice] = field(default_factory=list)
    value_edits: list[ValueEdit] = field(default_factory=list)
    macs: list[MacTerm] = field(default_factory=list)
    # (layout read through Shape, data tensor of the Slice/Reshape it parameterises, node)
    channel_reads: list[tuple[np.ndarray, str, int]] = field(default_factory=list)
    node_index: int = -1
    # Unions are collected and linked in one vectorised pass (``link``): no rule reads the
    # partition while the graph is walked, and the smallest id wins either way, so the classes
    # and their ids are the same as linking each pair at once (a fixed numpy cost per call).
    pending_unions: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    # -- reading --------------------------------------------------------------------------
    def chan(self, name: str) -> Chan | None:
        return self.state.get(name) if name else None

    def const(self, name: str) -> np.ndarray | None:
        return self.g.const(name) if name else None

    @property
    def node(self) -> onnx.NodeProto:
        return self.g.nodes[self.node_index]

    def rank(self, name: str) -> int | None:
        c = self.state.get(name)
        return c.rank if c is not None else self.g.rank(name)

    def eval_scaled(self, name: str, scale: int) -> np.ndarray | None:
        """Evaluate shape arithmetic with every channel count read through Shape() multiplied
        by ``scale`` (NaN marks unknown entries). Whether the counts involved stay tied after
        pruning is checked separately (``channel_reads``)."""
        from ..shape_eval import evaluate

        def shape_of(t: str):
            s = self.g.shape(t)
            if s is None:
                return None
            dims = [float(d) if isinstance(d, int) else np.nan for d in s]
            c = self.state.get(t)
            if c is not None and c.rank == len(dims):
                dims[c.axis] = float(c.size * scale)
            return tuple(dims)

        r = evaluate(self.g, name, shape_of)
        return None if r is None else r[0]

    # -- writing --------------------------------------------------------------------------
    def set(self, name: str, chan: Chan | None) -> None:
        if name and chan is not None:
            self.state[name] = chan

    def birth(self, tensor: str, size: int, axis: int, rank: int,
              weight: tuple[str, int] | None = None, frozen: str | None = None) -> np.ndarray:
        layout = self.uf.make(size)
        self.births.append(Birth(self.node_index, tensor, layout, weight))
        if frozen:
            self.freezes.append((layout, frozen, self.node_index))
        self.set(tensor, Chan(axis, rank, layout))
        return layout

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        if a is not b:
            self.pending_unions.append((a, b))

    def link(self) -> None:
        """Apply the collected unions (the analysis calls it once, after the walk)."""
        if self.pending_unions:
            a, b = zip(*self.pending_unions, strict=True)
            self.pending_unions = []
            self.uf.union_arrays(np.concatenate(a), np.concatenate(b))

    def freeze(self, layout: np.ndarray, reason: str) -> None:
        self.freezes.append((layout, reason, self.node_index))

    def freeze_inputs(self, reason: str, names: list[str] | None = None) -> None:
        for name in self.node.input if names is None else names:
            c = self.chan(name)
            if c is not None:
                self.freeze(c.layout, reason)

    def consume(self, layout: np.ndarray) -> None:
        self.consumers.append((self.node_index, layout))

    def slice_const(self, name: str, axis: int, layout: np.ndarray) -> None:
        """Register a slice; two nodes slicing one shared constant couple their channels."""
        key = (name, axis)
        prev = self.slices.get(key)
        if prev is not None:
            if prev.layout.shape == layout.shape:
                self.union(prev.layout, layout)
            else:
                self.freeze(layout, f"constant '{name}' is shared with different channel counts")
                self.freeze(prev.layout, f"constant '{name}' is shared with different channel counts")
            return
        self.slices[key] = SliceConst(name, axis, layout)

    def grouped_slice(self, name: str, out_layout: np.ndarray, in_layout: np.ndarray,
                      groups: int) -> None:
        self.grouped.append(GroupedWeightSlice(name, out_layout, in_layout, groups))

    def edit_input(self, input_index: int, compute) -> None:
        self.value_edits.append(ValueEdit(self.node_index, compute, input_index=input_index))

    def edit_attr(self, attr: str, compute) -> None:
        self.value_edits.append(ValueEdit(self.node_index, compute, attr=attr))

    def block(self, layout: np.ndarray, n_blocks: int) -> None:
        self.blocks.append((layout, n_blocks, self.node_index))

    def mac(self, term: MacTerm) -> None:
        self.macs.append(term)


Rule = Callable[[Context, onnx.NodeProto], None]


class RuleRegistry:
    """op_type -> rule. Copy it to add or override rules without touching the default."""

    def __init__(self, rules: dict[str, Rule] | None = None) -> None:
        self._rules: dict[str, Rule] = dict(rules or {})

    def register(self, *op_types: str) -> Callable[[Rule], Rule]:
        def deco(fn: Rule) -> Rule:
            for op in op_types:
                self._rules[op] = fn
            return fn

        return deco

    def get(self, op_type: str) -> Rule | None:
        return self._rules.get(op_type)

    def __contains__(self, op_type: str) -> bool:
        return op_type in self._rules

    def copy(self) -> RuleRegistry:
        return RuleRegistry(self._rules)

    def op_types(self) -> list[str]:
        return sorted(self._rules)


DEFAULT_RULES = RuleRegistry()

# Element-wise unary ops and pools: channel i of the output depends only on channel i of input 0,
# and extra inputs (Clip bounds, pool attributes) are scalars. Data, not functions.
CHANNEL_PRESERVING = frozenset({
    "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "ThresholdedRelu", "Sigmoid",
    "HardSigmoid", "HardSwish", "Tanh", "Softplus", "Softsign", "Gelu", "Mish", "Erf", "Exp",
    "Log", "Abs", "Neg", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos",
    "Identity", "Cast", "CastLike", "Clip", "Not", "IsNaN", "IsInf", "Relu6", "Swish",
    "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
    "Dropout",
})

from . import (  # noqa: E402,F401  (modules register themselves)
    concat_split,
    conv,
    elementwise,
    linear,
    norm,
    shape_ops,
    spatial,
)
