"""Channel dependency analysis: run the rules over the graph and gather channel groups.

A channel *class* is a set of channel positions (one per tensor that carries it) that must live or
die together; rules union classes where ops couple them. A *group* is what a policy prunes with one
ratio: the classes created by producers that share classes (a residual stage, a Concat feeding an
Add, ...). Any class a rule froze freezes its whole group, with the reason and node kept for
``inspect``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import onnx

from .checks import check_defined, check_input_shapes
from .graph import GraphView, computed_shape_args, infer_shapes
from .load import load_model, sorted_nodes
from .rules import DEFAULT_RULES, Context, MacTerm, RuleRegistry
from .unionfind import UnionFind

__all__ = ["ChannelGroup", "Analysis", "analyze"]


@dataclass(frozen=True, eq=False)
class ChannelGroup:
    """Channels pruned with one decision. ``classes`` lists class ids in canonical order: a
    policy's explicit indices refer to positions in it."""

    index: int
    id: str
    classes: np.ndarray
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    frozen: str | None = None
    frozen_node: str | None = None
    blocks: int = 1  # kept counts must be equal in each of `blocks` equal parts
    block_of: np.ndarray | None = None  # block id of each position in `classes`

    @property
    def size(self) -> int:
        return int(self.classes.shape[0])

    @property
    def prunable(self) -> bool:
        return self.frozen is None


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}#{index}({node.output[0] if node.output else ''})"


def _outer_names(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from enclosing scopes (they are implicit inputs of its node)."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(i for i in node.input if i)
        for a in node.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                used.update(_outer_names(sub))
        defined.update(node.output)
    return used - defined


@dataclass(eq=False)
class Analysis:
    """Everything later stages need: the normalised model, edits, groups and MAC terms."""

    model: onnx.ModelProto
    view: GraphView
    ctx: Context
    raw_to_class: np.ndarray
    class_group: np.ndarray
    groups: list[ChannelGroup]
    class_frozen: np.ndarray
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @cached_property
    def group_by_id(self) -> dict[str, ChannelGroup]:
        return {g.id: g for g in self.groups}

    @property
    def num_classes(self) -> int:
        return int(self.class_group.shape[0])

    @property
    def prunable_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def keep_all(self) -> np.ndarray:
        return np.ones(self.num_classes, dtype=bool)

    def raw_keep(self, keep: np.ndarray) -> np.ndarray:
        """Keep mask over raw class ids, the indexing space of every edit and layout."""
        return keep[self.raw_to_class]

    def members(self, group: ChannelGroup) -> list[tuple[str, int]]:
        """(tensor, axis) pairs that carry channels of ``group``."""
        out = []
        for name, chan in self.ctx.state.items():
            if np.any(self.class_group[self.raw_to_class[chan.layout]] == group.index):
                out.append((name, chan.axis))
        return out

    @property
    def mac_terms(self) -> list[MacTerm]:
        return self.ctx.macs


def analyze(
    model: str | os.PathLike[str] | bytes | onnx.ModelProto,
    *,
    rules: RuleRegistry = DEFAULT_RULES,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> Analysis:
    """Analyse channel dependencies. Works with dynamic input dims; MACs need concrete spatial
    sizes, which ``input_shapes`` provides where the model leaves them symbolic.

    Raises:
        GraphOpsError: a node reads an undefined tensor, or ``input_shapes`` does not fit the
            model's inputs (see :mod:`graph_ops.checks`).
    """
    m = load_model(model)
    check_defined(m.graph)
    shapes = dict(input_shapes or {})
    check_input_shapes(m.graph, shapes)
    nodes = sorted_nodes(m.graph)
    view = GraphView(m, infer_shapes(m, shapes, nodes=nodes), nodes)
    known: dict[str, np.ndarray] = {}
    for _ in range(64):  # shapes behind Shape()-computed Slice/Reshape arguments, block by block
        more = computed_shape_args(view)
        if not set(more) - set(known):
            break
        known.update(more)
        view.shapes = infer_shapes(m, shapes, known, nodes)
    ctx = Context(view)
    for idx, node in enumerate(view.nodes):
        ctx.node_index = idx
        if node.output and node.output[0] in view.const_source:
            continue  # Constant nodes and folded constant expressions
        implicit: set[str] = set()
        for a in node.attribute:
            if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                    implicit |= _outer_names(sub)
        rule = rules.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if rule is None or implicit:
            what = node.op_type if not node.domain else f"{node.domain}.{node.op_type}"
            ctx.freeze_inputs(f"unsupported op {what}", list(node.input) + sorted(implicit))
            continue
        rule(ctx, node)
    for out in view.graph_outputs:
        chan = ctx.chan(out)
        if chan is not None:
            ctx.node_index = view.producer.get(out, -1)
            ctx.freeze(chan.layout, f"reaches graph output '{out}'")
    return _finalize(m, view, ctx, shapes)


def _dense_ranks(values: np.ndarray) -> np.ndarray:
    """``np.unique(values, return_inverse=True)[1]`` for small non-negative ints, in O(n):
    union-find roots are ids below the array's length."""
    if not values.size:
        return np.zeros(0, dtype=np.int64)
    present = np.zeros(int(values.max()) + 1, dtype=np.int64)
    present[values] = 1
    return (np.cumsum(present) - 1)[values]


def _distinct(values: np.ndarray) -> list[int]:
    """``np.unique(values).tolist()``; a layout nearly always lies in one group, and checking
    for that costs a third of a sort."""
    if values.size and (values == values[0]).all():
        return [int(values[0])]
    return np.unique(values).tolist()


def _tied(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether kept counts of two layouts stay in a fixed ratio for every keep mask: the same
    classes, each repeated in the same proportion."""
    ca, na = np.unique(a, return_counts=True)
    cb, nb = np.unique(b, return_counts=True)
    if not np.array_equal(ca, cb):
        return False
    return bool(np.all(na * nb[0] == nb * na[0]))


def _finer_partition(a: tuple[int, np.ndarray], b: tuple[int, np.ndarray]
                     ) -> tuple[int, np.ndarray] | None:
    """Of two equal-size block partitions, the one that refines the other (equal counts in its
    blocks imply equal counts in the coarser ones), or None if neither does."""
    for fine, coarse in ((a, b), (b, a)):
        if fine[0] % coarse[0]:
            continue
        ok = all(np.unique(coarse[1][fine[1] == blk]).size == 1 for blk in range(fine[0]))
        if ok:
            return fine
    return None


def _finalize(m: onnx.ModelProto, view: GraphView, ctx: Context,
              input_shapes: dict[str, tuple[int, ...]]) -> Analysis:
    ctx.link()
    roots = ctx.uf.roots()
    raw_to_class = _dense_ranks(roots)
    n_classes = int(raw_to_class.max()) + 1 if raw_to_class.size else 0

    # Groups: classes created together by one producer belong to one group (one vectorised
    # union over every birth at once: per-birth calls cost more than the unions on small graphs).
    guf = UnionFind()
    guf.make(n_classes)
    births = [raw_to_class[b.layout] for b in ctx.births if b.layout.size]
    if births:
        guf.union_arrays(np.concatenate([np.full_like(c, c[0]) for c in births]),
                         np.concatenate(births))
    groot = guf.roots()

    # Channel counts read through Shape() must stay tied to the tensor they are used on.
    for read, data, node_index in ctx.channel_reads:
        used_chan = ctx.state.get(data)
        if used_chan is None:
            ctx.freezes.append((read, "the channel count is read through Shape into a "
                                "computed argument of unprunable data", node_index))
            continue
        used = used_chan.layout
        if not _tied(raw_to_class[read], raw_to_class[used]):
            reason = "a Shape()-computed argument mixes channel counts of different groups"
            ctx.freezes.append((read, reason, node_index))
            ctx.freezes.append((used, reason, node_index))

    frozen_reason: dict[int, tuple[str, int]] = {}
    class_frozen = np.zeros(n_classes, dtype=bool)
    for layout, reason, node_index in ctx.freezes:
        cls = raw_to_class[layout]
        class_frozen[cls] = True
        for r in _distinct(groot[cls]):
            frozen_reason.setdefault(r, (reason, node_index))

    order: dict[int, list[int]] = {}
    first_birth: dict[int, str] = {}
    producers: dict[int, list[str]] = {}
    seen = np.zeros(n_classes, dtype=bool)
    for birth in ctx.births:
        cls = raw_to_class[birth.layout]
        r = int(groot[cls[0]])
        first_birth.setdefault(r, birth.tensor)
        lst = order.setdefault(r, [])
        fresh = cls[~seen[cls]]
        if fresh.size > 1 and not (fresh[1:] > fresh[:-1]).all():  # dedupe, keep order
            fresh = fresh[np.sort(np.unique(fresh, return_index=True)[1])]
        lst.extend(fresh.tolist())
        seen[fresh] = True
        node = view.nodes[birth.node_index]
        label = _node_label(node, birth.node_index)
        plist = producers.setdefault(r, [])
        if label not in plist:
            plist.append(label)
    consumers: dict[int, list[str]] = {}
    for node_index, layout in ctx.consumers:
        for r in _distinct(groot[raw_to_class[layout]]):
            label = _node_label(view.nodes[node_index], node_index)
            lst = consumers.setdefault(r, [])
            if label not in lst:
                lst.append(label)

    # Grouped convolutions: equal kept counts per block.
    blocks: dict[int, tuple[int, np.ndarray]] = {}
    for layout, n, node_index in ctx.blocks:
        cls = raw_to_class[layout]
        rs = np.unique(groot[cls])
        r = int(rs[0])
        if rs.size != 1 or np.unique(cls).size != cls.size or \
                np.unique(cls).size != len(order.get(r, ())):
            for rr in rs.tolist():
                frozen_reason.setdefault(rr, ("grouped Conv blocks span other channels",
                                              node_index))
            continue
        pos_of = {c: i for i, c in enumerate(order[r])}
        block_of = np.empty(cls.size, dtype=np.int64)
        per = cls.size // n
        for p, c in enumerate(cls.tolist()):
            block_of[pos_of[c]] = p // per
        prev = blocks.get(r)
        if prev is not None:
            finer = _finer_partition(prev, (n, block_of))
            if finer is None:
                frozen_reason.setdefault(r, ("channel blocks of grouped Convs / chunks disagree",
                                             node_index))
                continue
            blocks[r] = finer
        else:
            blocks[r] = (n, block_of)

    roots_sorted = sorted(order, key=lambda r: order[r][0])
    class_group = np.full(n_classes, -1, dtype=np.int64)
    groups: list[ChannelGroup] = []
    for gi, r in enumerate(roots_sorted):
        cls = np.asarray(order[r], dtype=np.int64)
        class_group[cls] = gi
        reason = frozen_reason.get(r)
        n_blocks, block_of = blocks.get(r, (1, None))
        groups.append(ChannelGroup(
            index=gi,
            id=first_birth[r],
            classes=cls,
            producers=tuple(producers.get(r, ())),
            consumers=tuple(consumers.get(r, ())),
            frozen=reason[0] if reason else None,
            frozen_node=_node_label(view.nodes[reason[1]], reason[1])
            if reason and reason[1] >= 0 else None,
            blocks=n_blocks,
            block_of=block_of,
        ))
    return Analysis(m, view, ctx, raw_to_class, class_group, groups, class_frozen,
                    dict(input_shapes))
