"""Concat, Split, Slice and Gather: ops that move channels to other offsets.

Offsets are recomputed from the keep mask, so a Split keeps splitting where its parts now end and a
Slice still selects the same channels. Equal splits (no sizes, or ``num_outputs``) are rewritten
with explicit sizes, which is exact whatever survives in each part.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from . import DEFAULT_RULES, Chan, Context

rule = DEFAULT_RULES.register


def _count(keep: np.ndarray, layout: np.ndarray) -> int:
    return int(np.count_nonzero(keep[layout]))


@rule("Concat")
def concat(ctx: Context, node: onnx.NodeProto) -> None:
    names = list(node.input)
    chans = [ctx.chan(n) for n in names]
    present = [c for c in chans if c is not None]
    if not present:
        return
    rank = present[0].rank
    axis = int(ctx.g.attr(node, "axis")) % rank
    if any(c.rank != rank for c in present):
        ctx.freeze_inputs("Concat of tensors with different ranks")
        return
    if all(c.axis == axis for c in present):
        parts = []
        for name, c in zip(names, chans, strict=True):
            if c is not None:
                parts.append(c.layout)
                continue
            shape = ctx.g.shape(name)
            dim = shape[axis] if shape is not None and len(shape) == rank else None
            if not isinstance(dim, int):
                ctx.freeze_inputs(f"Concat input '{name}' of unknown channel count")
                return
            if dim == 0:
                continue
            # Channels from an unprunable tensor: new classes that are frozen from birth.
            src = "constant" if ctx.g.is_const(name) else "unprunable tensor"
            parts.append(ctx.birth(f"{node.output[0]}#{name}", dim, axis, rank,
                                   frozen=f"Concat with a {src} '{name}'"))
            ctx.state.pop(f"{node.output[0]}#{name}", None)
        ctx.set(node.output[0], Chan(axis, rank, np.concatenate(parts)))
        return
    # Concat along another axis: every part must carry the same channels.
    if len(present) != len(names) or len({(c.axis, c.size) for c in present}) != 1:
        ctx.freeze_inputs("Concat along a non-channel axis of mixed tensors")
        return
    for c in present[1:]:
        ctx.union(present[0].layout, c.layout)
    ctx.set(node.output[0], present[0])


@rule("Split")
def split(ctx: Context, node: onnx.NodeProto) -> None:
    x = ctx.chan(node.input[0])
    if x is None:
        return
    axis = int(ctx.g.attr(node, "axis", 0)) % x.rank
    outs = list(node.output)
    if axis != x.axis:
        for o in outs:
            ctx.set(o, x)
        return
    opset = ctx.g.opset
    sizes = None
    if opset >= 13 and len(node.input) > 1 and node.input[1]:
        v = ctx.const(node.input[1])
        if v is None:
            ctx.freeze(x.layout, "Split with computed sizes")
            return
        sizes = [int(s) for s in v.reshape(-1)]
    elif opset < 13 and ctx.g.attr(node, "split") is not None:
        sizes = [int(s) for s in ctx.g.attr(node, "split")]
    if sizes is None:  # equal split, possibly with a smaller last part (opset 18)
        n = len(outs)
        step = -(-x.size // n)
        sizes = [min(step, x.size - i * step) for i in range(n)]
    if sum(sizes) != x.size or len(sizes) != len(outs):
        ctx.freeze(x.layout, "Split sizes do not match the channel count")
        return
    bounds = np.cumsum([0, *sizes])
    layouts = [x.layout[bounds[i]:bounds[i + 1]] for i in range(len(outs))]
    for o, lay in zip(outs, layouts, strict=True):
        ctx.set(o, Chan(axis, x.rank, lay))

    def new_sizes(keep, layouts=layouts):
        return np.array([_count(keep, lay) for lay in layouts], dtype=np.int64)

    if opset >= 13:
        ctx.edit_input(1, new_sizes)
        if ctx.g.attr(node, "num_outputs") is not None:
            ctx.edit_attr("num_outputs", None)
    else:
        ctx.edit_attr("split", lambda keep, f=new_sizes: [int(v) for v in f(keep)])


def _slice_args(ctx: Context, node: onnx.NodeProto):
    """starts, ends, axes, steps as int lists, or None when any of them is computed."""
    if ctx.g.opset < 10:
        starts = ctx.g.attr(node, "starts")
        ends = ctx.g.attr(node, "ends")
        axes = ctx.g.attr(node, "axes", list(range(len(starts))))
        return list(starts), list(ends), list(axes), [1] * len(starts)
    vals = []
    for i in range(1, 5):
        if i < len(node.input) and node.input[i]:
            v = ctx.const(node.input[i])
            if v is None:
                return None
            vals.append([int(a) for a in v.reshape(-1)])
        else:
            vals.append(None)
    starts, ends, axes, steps = vals
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    return starts, ends, axes, steps


@rule("Slice")
def slice_(ctx: Context, node: onnx.NodeProto) -> None:
    x = ctx.chan(node.input[0])
    if x is None:
        return
    args = _slice_args(ctx, node)
    if args is None:
        _computed_slice(ctx, node, x)
        return
    starts, ends, axes, steps = args
    axes = [a % x.rank for a in axes]
    if x.axis not in axes:
        ctx.set(node.output[0], x)
        return
    i = axes.index(x.axis)
    if steps[i] != 1:
        ctx.freeze(x.layout, "Slice with a step on the channel axis")
        return
    lo, hi, _ = slice(starts[i], ends[i], 1).indices(x.size)
    hi = max(hi, lo)
    layout = x.layout[lo:hi]
    ctx.set(node.output[0], Chan(x.axis, x.rank, layout))
    full = x.layout

    def new_bound(keep, which, orig, lo=lo, hi=hi, i=i, full=full):
        out = np.array(orig, dtype=np.int64)
        before = _count(keep, full[:lo])
        out[i] = before if which == "start" else before + _count(keep, full[lo:hi])
        return out

    if ctx.g.opset < 10:
        ctx.edit_attr("starts", lambda keep, f=new_bound, s=starts: list(f(keep, "start", s)))
        ctx.edit_attr("ends", lambda keep, f=new_bound, e=ends: list(f(keep, "end", e)))
    else:
        ctx.edit_input(1, lambda keep, f=new_bound, s=starts: f(keep, "start", s))
        ctx.edit_input(2, lambda keep, f=new_bound, e=ends: f(keep, "end", e))


@rule("Gather")
def gather(ctx: Context, node: onnx.NodeProto) -> None:
    x = ctx.chan(node.input[0])
    if x is None:
        if ctx.chan(node.input[1]) is not None:
            ctx.freeze_inputs("Gather indexed by channel values")
        return
    axis = int(ctx.g.attr(node, "axis", 0)) % x.rank
    idx = ctx.const(node.input[1])
    if idx is None:
        ctx.freeze(x.layout, "Gather with computed indices")
        return
    if axis != x.axis:
        new_axis = x.axis + idx.ndim - 1 if axis < x.axis else x.axis
        ctx.set(node.output[0], Chan(new_axis, x.rank + idx.ndim - 1, x.layout))
        return
    if idx.ndim != 1:
        ctx.freeze(x.layout, "Gather of single channels")
        return
    pos = np.asarray(idx, dtype=np.int64) % x.size
    ctx.set(node.output[0], Chan(axis, x.rank, x.layout[pos]))
    full = x.layout

    def new_indices(keep, pos=pos, full=full, dtype=idx.dtype):
        k = keep[full]
        new_pos = np.cumsum(k) - 1
        return new_pos[pos[k[pos]]].astype(dtype)

    ctx.edit_input(1, new_indices)


def _computed_slice(ctx: Context, node: onnx.NodeProto, x: Chan) -> None:
    """Bounds computed from Shape() (torch.chunk with dynamic dims): exact after pruning when
    they scale with the channel count and every part keeps the same number of channels."""
    found = []
    for scale in (1, 2, 3):
        vals = []
        for i in range(1, 5):
            name = node.input[i] if i < len(node.input) else ""
            v = ctx.eval_scaled(name, scale) if name else None
            if name and (v is None or np.isnan(v).any()):
                ctx.freeze(x.layout, "Slice with computed bounds that do not follow channels")
                return
            vals.append(None if v is None else [int(a) for a in v.reshape(-1)])
        starts, ends, axes, steps = vals
        axes = [a % x.rank for a in (axes if axes is not None else range(len(starts)))]
        if x.axis not in axes:
            ctx.set(node.output[0], x)
            return
        i = axes.index(x.axis)
        if steps is not None and steps[i] != 1:
            ctx.freeze(x.layout, "Slice with a step on the channel axis")
            return
        lo, hi, _ = slice(starts[i], ends[i], 1).indices(x.size * scale)
        found.append((lo, max(lo, hi)))
    lo, hi = found[0]
    if any((a, b) != (lo * s, hi * s) for s, (a, b) in zip((1, 2, 3), found, strict=True)):
        ctx.freeze(x.layout, "Slice with computed bounds that do not follow channels")
        return
    n = x.size // math.gcd(x.size, math.gcd(lo, hi))
    if n > 1:
        ctx.block(x.layout, n)
    ctx.set(node.output[0], Chan(x.axis, x.rank, x.layout[lo:hi]))
