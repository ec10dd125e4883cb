"""Ops that act per channel over spatial axes: activations, pools, Resize, Pad, reductions."""

from __future__ import annotations

import numpy as np
import onnx

from ..edits import SetCount
from . import CHANNEL_PRESERVING, DEFAULT_RULES, Chan, Context

rule = DEFAULT_RULES.register


def _extra_outputs_unused(ctx: Context, node: onnx.NodeProto, what: str) -> bool:
    """MaxPool indices and Dropout masks encode channel positions; allow them only if unused."""
    x = ctx.chan(node.input[0])
    for out in node.output[1:]:
        if out and (ctx.g.consumers.get(out) or out in ctx.g.graph_outputs):
            if x is not None:
                ctx.freeze(x.layout, f"{node.op_type} {what} output is used")
            return False
    return True


@rule(*sorted(CHANNEL_PRESERVING))
def preserve(ctx: Context, node: onnx.NodeProto) -> None:
    x = ctx.chan(node.input[0]) if node.input else None
    if x is None:
        return
    for extra in node.input[1:]:
        c = ctx.const(extra)
        if extra and (c is None or c.size != 1):
            ctx.freeze(x.layout, f"{node.op_type} has a non-scalar extra input '{extra}'")
            return
    if not _extra_outputs_unused(ctx, node, "second"):
        return
    ctx.set(node.output[0], x)


def _const_list(ctx: Context, node: onnx.NodeProto, input_index: int, attr: str):
    """A list argument given as attribute (old opsets) or constant input (new ones)."""
    if len(node.input) > input_index and node.input[input_index]:
        v = ctx.const(node.input[input_index])
        return None if v is None else [float(a) if v.dtype.kind == "f" else int(a)
                                        for a in v.reshape(-1)], True
    v = ctx.g.attr(node, attr)
    return (None, False) if v is None else (list(v), False)


@rule("Resize", "Upsample")
def resize(ctx: Context, node: onnx.NodeProto) -> None:
    x = ctx.chan(node.input[0])
    if x is None:
        return
    if node.op_type == "Upsample" or ctx.g.opset < 11:
        scales_idx, sizes_idx = 1, -1
    else:
        scales_idx, sizes_idx = 2, 3
    scales = ctx.const(node.input[scales_idx]) if len(node.input) > scales_idx and \
        node.input[scales_idx] else None
    if scales is None and node.op_type == "Upsample" and ctx.g.attr(node, "scales") is not None:
        scales = np.array(ctx.g.attr(node, "scales"), dtype=np.float32)
    sizes_name = node.input[sizes_idx] if sizes_idx > 0 and len(node.input) > sizes_idx else ""
    if scales is not None and scales.size:
        if scales.size != x.rank or float(scales[x.axis]) != 1.0:
            ctx.freeze(x.layout, "Resize scales the channel axis")
            return
    elif sizes_name:
        sizes = ctx.const(sizes_name)
        axes = ctx.g.attr(node, "axes")
        if sizes is None:
            ctx.freeze(x.layout, "Resize with computed sizes")
            return
        axes = list(range(x.rank)) if axes is None else [a % x.rank for a in axes]
        if x.axis in axes:
            pos = axes.index(x.axis)
            if int(sizes[pos]) != x.size:
                ctx.freeze(x.layout, "Resize changes the channel count")
                return
            ctx.edit_input(sizes_idx, SetCount(sizes, pos, x.layout))
    else:
        ctx.freeze(x.layout, "Resize without constant scales or sizes")
        return
    ctx.set(node.output[0], x)


@rule("Pad")
def pad(ctx: Context, node: onnx.NodeProto) -> None:
    x = ctx.chan(node.input[0])
    if x is None:
        return
    pads, _ = _const_list(ctx, node, 1, "pads")
    if pads is None:
        ctx.freeze(x.layout, "Pad with computed pads")
        return
    axes = list(range(x.rank))
    if len(node.input) > 3 and node.input[3]:
        a = ctx.const(node.input[3])
        if a is None:
            ctx.freeze(x.layout, "Pad with computed axes")
            return
        axes = [int(v) % x.rank for v in a]
    n = len(axes)
    if x.axis in axes:
        i = axes.index(x.axis)
        if pads[i] != 0 or pads[i + n] != 0:
            ctx.freeze(x.layout, "Pad pads the channel axis")
            return
    ctx.set(node.output[0], x)


_REDUCE = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
           "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


@rule(*_REDUCE)
def reduce(ctx: Context, node: onnx.NodeProto) -> None:
    x = ctx.chan(node.input[0])
    if x is None:
        return
    axes_in_input = node.op_type == "ReduceSum" and ctx.g.opset >= 13 or ctx.g.opset >= 18
    if axes_in_input:
        name = node.input[1] if len(node.input) > 1 else ""
        axes_v = ctx.const(name) if name else np.zeros(0, np.int64)
        if axes_v is None:
            ctx.freeze(x.layout, f"{node.op_type} with computed axes")
            return
        axes = [int(a) for a in axes_v.reshape(-1)]
    else:
        axes = list(ctx.g.attr(node, "axes", []) or [])
    if not axes:
        if ctx.g.attr(node, "noop_with_empty_axes", 0):
            ctx.set(node.output[0], x)
            return
        axes = list(range(x.rank))
    axes = sorted({a % x.rank for a in axes})
    if x.axis in axes:
        ctx.freeze(x.layout, f"{node.op_type} reduces over the channel axis")
        return
    if ctx.g.attr(node, "keepdims", 1):
        ctx.set(node.output[0], x)
    else:
        shift = sum(1 for a in axes if a < x.axis)
        ctx.set(node.output[0], Chan(x.axis - shift, x.rank - len(axes), x.layout))


@rule("Tile")
def tile(ctx: Context, node: onnx.NodeProto) -> None:
    x = ctx.chan(node.input[0])
    if x is None:
        return
    reps = ctx.const(node.input[1])
    if reps is None or int(reps[x.axis]) != 1:
        ctx.freeze(x.layout, "Tile repeats the channel axis")
        return
    ctx.set(node.output[0], x)
