"""Ops that move the channel axis: Transpose, (Un)Squeeze, Reshape/Flatten (into Gemm heads or
channel shuffles), Expand, and Shape, whose output may encode the channel count."""

from __future__ import annotations

import math

import numpy as np
import onnx

from ..edits import SetCount
from . import DEFAULT_RULES, Chan, Context

rule = DEFAULT_RULES.register


@rule("Transpose")
def transpose(ctx: Context, node: onnx.NodeProto) -> None:
    x = ctx.chan(node.input[0])
    if x is None:
        return
    perm = ctx.g.attr(node, "perm") or list(range(x.rank))[::-1]
    ctx.set(node.output[0], Chan(list(perm).index(x.axis), x.rank, x.layout))


def _axes(ctx: Context, node: onnx.NodeProto) -> list[int] | None:
    if ctx.g.opset >= 13:
        if len(node.input) < 2 or not node.input[1]:
            return []
        v = ctx.const(node.input[1])
        return None if v is None else [int(a) for a in v.reshape(-1)]
    return list(ctx.g.attr(node, "axes", []) or [])


@rule("Unsqueeze")
def unsqueeze(ctx: Context, node: onnx.NodeProto) -> None:
    x = ctx.chan(node.input[0])
    if x is None:
        return
    axes = _axes(ctx, node)
    if axes is None:
        ctx.freeze(x.layout, "Unsqueeze with computed axes")
        return
    rank = x.rank + len(axes)
    axes = sorted(a % rank for a in axes)
    kept = [i for i in range(rank) if i not in axes]
    ctx.set(node.output[0], Chan(kept[x.axis], rank, x.layout))


@rule("Squeeze")
def squeeze(ctx: Context, node: onnx.NodeProto) -> None:
    x = ctx.chan(node.input[0])
    if x is None:
        return
    axes = _axes(ctx, node)
    if axes is None:
        ctx.freeze(x.layout, "Squeeze with computed axes")
        return
    if not axes:
        shape = ctx.g.shape(node.input[0])
        if shape is None or any(not isinstance(d, int) for d in shape):
            ctx.freeze(x.layout, "Squeeze of all unit axes with unknown shape")
            return
        axes = [i for i, d in enumerate(shape) if d == 1 and i != x.axis]
    axes = sorted(a % x.rank for a in axes)
    if x.axis in axes:
        ctx.freeze(x.layout, "Squeeze removes the channel axis")
        return
    shift = sum(1 for a in axes if a < x.axis)
    ctx.set(node.output[0], Chan(x.axis - shift, x.rank - len(axes), x.layout))


def _same_dim(a, b) -> bool:
    return a == b and a is not None


def _match_reshape(in_shape, out_shape, chan_axis: int):
    """Find p, the leading dims both shapes share, such that dims from p on are concrete and hold
    the same number of elements. Returns (p, in_suffix, out_suffix) or None."""
    for p in range(min(chan_axis, len(out_shape)), -1, -1):
        in_suf = in_shape[p:]
        if not all(isinstance(d, int) for d in in_suf):
            continue
        total = math.prod(in_suf)
        out_suf = list(out_shape[p:])
        unknown = [i for i, d in enumerate(out_suf) if not isinstance(d, int) or d < 0]
        if len(unknown) > 1:
            continue
        known = math.prod(d for d in out_suf if isinstance(d, int) and d >= 0)
        if unknown:
            if known == 0 or total % known:
                continue
            out_suf[unknown[0]] = total // known
        if math.prod(out_suf) != total:
            continue
        prefix_unknown = [i for i in range(p) if not _same_dim(in_shape[i], out_shape[i])]
        if prefix_unknown and (unknown or len(prefix_unknown) > 1
                               or isinstance(out_shape[prefix_unknown[0]], int)
                               and out_shape[prefix_unknown[0]] >= 0):
            continue
        return p, tuple(in_suf), tuple(out_suf)
    return None


def _reshape_chan(ctx: Context, x: Chan, in_shape, out_shape) -> tuple[Chan, int] | None:
    """Follow channel classes through a reshape; unify repeating blocks (channel shuffle)."""
    m = _match_reshape(in_shape, out_shape, x.axis)
    if m is None:
        return None
    p, in_suf, out_suf = m
    local = x.axis - p
    view = [1] * len(in_suf)
    view[local] = x.size
    classes = np.broadcast_to(x.layout.reshape(view), in_suf).reshape(out_suf)
    varying = [k for k in range(len(out_suf))
               if out_suf[k] > 1 and not (classes == classes.take([0], axis=k)).all()]
    if not varying:
        return None
    if len(varying) > 1:
        # Channels spread over several axes (a shuffle): the axis with most distinct classes
        # keeps them; positions along the others are unified so whole slices prune together.
        k = max(varying, key=lambda a: out_suf[a])
        index = tuple(slice(None) if a in varying else 0 for a in range(len(out_suf)))
        sub = classes[index]  # only the varying axes remain, in order
        moved = np.moveaxis(sub, varying.index(k), -1).reshape(-1, out_suf[k])
        for row in moved[1:]:
            ctx.union(moved[0], row)
        layout = moved[0].copy()
    else:
        k = varying[0]
        index = [0] * len(out_suf)
        index[k] = slice(None)
        layout = classes[tuple(index)].copy()
        # The class must not vary along other axes (checked above through `varying`).
    return Chan(p + k, len(out_shape), layout), p + k


def _shape_of(ctx: Context, name: str):
    s = ctx.g.shape(name)
    return None if s is None else tuple(s)


@rule("Reshape")
def reshape(ctx: Context, node: onnx.NodeProto) -> None:
    x = ctx.chan(node.input[0])
    if x is None:
        return
    in_shape = _shape_of(ctx, node.input[0])
    target = ctx.const(node.input[1])
    allowzero = int(ctx.g.attr(node, "allowzero", 0))
    if in_shape is None or len(in_shape) != x.rank:
        ctx.freeze(x.layout, "Reshape of a tensor with unknown shape")
        return
    if target is not None:
        t = [int(v) for v in target.reshape(-1)]
        if allowzero and 0 in t:
            ctx.freeze(x.layout, "Reshape with allowzero")
            return
        out_shape = tuple(in_shape[i] if v == 0 else v for i, v in enumerate(t))
    else:
        v = ctx.eval_scaled(node.input[1], 1)
        if v is not None:
            out_shape = tuple(in_shape[i] if t == 0 else (None if np.isnan(t) else int(t))
                              for i, t in enumerate(v.reshape(-1)))
        else:
            out_shape = _shape_of(ctx, node.output[0])
        if out_shape is None:
            ctx.freeze(x.layout, "Reshape to a computed shape that cannot be inferred")
            return
    res = _reshape_chan(ctx, x, in_shape, out_shape)
    if res is None:
        ctx.freeze(x.layout, "Reshape mixes channels with other axes")
        return
    chan, k = res
    ctx.set(node.output[0], chan)
    if target is not None:
        t_k = int(target.reshape(-1)[k])
        if t_k == 0:
            if k != x.axis or in_shape[k] != chan.size:
                ctx.freeze(x.layout, "Reshape copies a channel count from another axis")
            return
        if t_k > 0:
            ctx.edit_input(1, SetCount(target, k, chan.layout))
        return
    if not _target_follows(ctx, node, x, chan, k):
        _edit_computed_target(ctx, node, k, chan)


def _target_follows(ctx: Context, node: onnx.NodeProto, x: Chan, chan: Chan, k: int) -> bool:
    """A target computed from Shape(x) that scales at axis k with the channel count (and nowhere
    else) stays right after pruning by itself."""
    one = ctx.eval_scaled(node.input[1], 1)
    two = ctx.eval_scaled(node.input[1], 2)
    if one is None or two is None:
        return False
    one, two = one.reshape(-1), two.reshape(-1)
    if not (np.isnan(one[k]) or one[k] in (-1, 0) or (two[k] == 2 * one[k] and chan.size ==
                                                      one[k])):
        return False
    others = [i for i in range(one.size) if i != k]
    same = all((np.isnan(one[i]) and np.isnan(two[i])) or one[i] == two[i] for i in others)
    return same and not (np.isnan(one[k]) and np.isnan(two[k]))


def _edit_computed_target(ctx: Context, node: onnx.NodeProto, k: int, chan: Chan) -> None:
    """A shape built by Concat of pieces: edit the constant piece holding the channel count."""
    prod = ctx.g.producer.get(node.input[1])
    cat = ctx.g.nodes[prod] if prod is not None else None
    if cat is None or cat.op_type != "Concat":
        ctx.freeze(chan.layout, "Reshape to a computed shape")
        return
    offset = 0
    for j, piece in enumerate(cat.input):
        shape = ctx.g.shape(piece)
        if shape is None or len(shape) != 1 or not isinstance(shape[0], int):
            ctx.freeze(chan.layout, "Reshape to a computed shape of unknown pieces")
            return
        if offset <= k < offset + shape[0]:
            value = ctx.const(piece)
            if value is None:
                ctx.freeze(chan.layout, "Reshape to a computed shape that does not follow "
                                        "channels")
                return
            v = int(value.reshape(-1)[k - offset])
            if v <= 0:
                return
            saved, ctx.node_index = ctx.node_index, prod
            ctx.edit_input(j, SetCount(value, k - offset, chan.layout))
            ctx.node_index = saved
            return
        offset += shape[0]
    ctx.freeze(chan.layout, "Reshape to a computed shape")


@rule("Flatten")
def flatten(ctx: Context, node: onnx.NodeProto) -> None:
    x = ctx.chan(node.input[0])
    if x is None:
        return
    in_shape = _shape_of(ctx, node.input[0])
    axis = int(ctx.g.attr(node, "axis", 1)) % (x.rank + 1)
    if in_shape is None or x.axis < axis:
        ctx.freeze(x.layout, "Flatten merges channels into the leading axis")
        return
    trailing = in_shape[axis:]
    if not all(isinstance(d, int) for d in trailing):
        ctx.freeze(x.layout, "Flatten of a tensor with unknown trailing shape")
        return
    # Everything before `axis` collapses into one leading dim that channels never enter.
    lead = "__lead__"
    res = _reshape_chan(ctx, Chan(x.axis - axis + 1, len(trailing) + 1, x.layout),
                        (lead, *trailing), (lead, math.prod(trailing)))
    if res is None:
        ctx.freeze(x.layout, "Flatten mixes channels with other axes")
        return
    ctx.set(node.output[0], res[0])


@rule("Expand")
def expand(ctx: Context, node: onnx.NodeProto) -> None:
    x = ctx.chan(node.input[0])
    if x is None:
        return
    shape = ctx.const(node.input[1])
    if shape is None:
        ctx.freeze(x.layout, "Expand to a computed shape")
        return
    s = [int(v) for v in shape.reshape(-1)]
    rank = max(len(s), x.rank)
    axis = rank - x.rank + x.axis
    local = axis - (rank - len(s))
    if local >= 0 and s[local] not in (1, x.size):
        ctx.freeze(x.layout, "Expand changes the channel count")
        return
    if local >= 0 and s[local] == x.size and x.size != 1:
        ctx.edit_input(1, SetCount(shape, local, x.layout))
    ctx.set(node.output[0], Chan(axis, rank, x.layout))


@rule("Shape")
def shape(ctx: Context, node: onnx.NodeProto) -> None:
    """The shape vector holds the channel count. Allow it only where every use of that entry is a
    Slice bound or Reshape target of the same channels (their rules check the arithmetic) or an
    entry nobody reads (batch size, spatial dims)."""
    x = ctx.chan(node.input[0])
    if x is None:
        return
    start = ctx.g.attr(node, "start", 0)
    end = ctx.g.attr(node, "end", None)
    lo, hi, _ = slice(start, end).indices(x.rank)
    if not lo <= x.axis < hi:
        return
    bad = _channel_read(ctx, node.output[0], x.axis - lo, hi - lo, x)
    if bad:
        ctx.freeze(x.layout, f"the channel count is read through Shape into {bad}")


def _picks(ctx: Context, user: onnx.NodeProto, pos: int, length: int) -> bool:
    """Whether a Gather/Slice over a shape vector picks entry ``pos``."""
    if user.op_type == "Gather" and int(ctx.g.attr(user, "axis", 0)) == 0:
        idx = ctx.const(user.input[1])
        return idx is None or pos in (np.asarray(idx).reshape(-1) % length)
    if user.op_type == "Slice" and len(user.input) >= 3:
        s, e = ctx.const(user.input[1]), ctx.const(user.input[2])
        steps = ctx.const(user.input[4]) if len(user.input) > 4 and user.input[4] else None
        if s is None or e is None or s.size != 1 or e.size != 1 or (
            steps is not None and int(steps.reshape(-1)[0]) != 1
        ):
            return True
        lo, hi, _ = slice(int(s.reshape(-1)[0]), int(e.reshape(-1)[0])).indices(length)
        return lo <= pos < hi
    return True


def _channel_read(ctx: Context, vec: str, pos: int, length: int, x: Chan) -> str | None:
    """Follow a shape vector forward through pure shape arithmetic. Slice bounds and Reshape
    targets it reaches are recorded for a tie check after all couplings are known; any other
    consumer of the channel entry is returned as illegal."""
    from ..shape_eval import SHAPE_ARITH

    stack: list[tuple[str, bool]] = [(vec, True)]
    seen: set[str] = set()
    while stack:
        name, is_vec = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in ctx.g.graph_outputs:
            return f"graph output '{name}'"
        for ui in ctx.g.consumers.get(name, ()):
            user = ctx.g.nodes[ui]
            slots = [i for i, n in enumerate(user.input) if n == name]
            if is_vec and user.op_type in ("Gather", "Slice") and slots == [0] and \
                    not _picks(ctx, user, pos, length):
                continue
            if user.op_type in ("Slice", "Reshape") and 0 not in slots:
                # A bound or target of the data in slot 0 (whose state may not exist yet).
                ctx.channel_reads.append((x.layout, user.input[0], ui))
                continue
            if user.op_type in SHAPE_ARITH:
                stack.extend((o, False) for o in user.output)
                continue
            return f"{user.op_type} '{user.name or user.output[0]}'"
    return None


@rule("Size")
def size(ctx: Context, node: onnx.NodeProto) -> None:
    ctx.freeze_inputs("Size reads the channel count")
