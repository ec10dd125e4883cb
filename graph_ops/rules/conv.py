"""Conv (1D/2D/3D, grouped, depthwise) and ConvTranspose."""

from __future__ import annotations

import math

import numpy as np
import onnx

from . import DEFAULT_RULES, Chan, Context, MacTerm

rule = DEFAULT_RULES.register


def _spatial(ctx: Context, name: str, start: int = 2) -> int | None:
    shape = ctx.g.shape(name)
    if shape is None:
        return None
    dims = shape[start:]
    if not all(isinstance(d, int) for d in dims):
        return None
    return math.prod(dims) if dims else 1


def _batch(ctx: Context, name: str) -> int:
    shape = ctx.g.shape(name)
    return shape[0] if shape and isinstance(shape[0], int) else 1


def _mul(*vals: int | None) -> int | None:
    out = 1
    for v in vals:
        if v is None:
            return None
        out *= int(v)
    return out


def _group_count(keep, layout) -> int:
    return int(np.count_nonzero(keep[layout]))


@rule("Conv")
def conv(ctx: Context, node: onnx.NodeProto) -> None:
    x = ctx.chan(node.input[0])
    w = ctx.const(node.input[1])
    out = node.output[0]
    if w is None:
        ctx.freeze_inputs("Conv with a computed (non-constant) weight")
        return
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else ""
    if bias and ctx.const(bias) is None:
        ctx.freeze_inputs("Conv with a computed bias")
        return
    if x is not None and x.axis != 1:
        ctx.freeze(x.layout, "Conv input with channels off axis 1")
        x = None
    g = int(ctx.g.attr(node, "group", 1))
    c_out, c_in_g = int(w.shape[0]), int(w.shape[1])
    c_in = g * c_in_g
    rank = w.ndim
    kernel = math.prod(w.shape[2:])
    coef = _mul(_batch(ctx, out), _spatial(ctx, out), kernel)

    if g > 1 and c_in_g == 1 and g == c_in:  # depthwise, channel multiplier m
        m = c_out // c_in
        if x is None:
            layout = ctx.birth(out, c_out, 1, rank, (node.input[1], 0),
                               frozen="depthwise Conv on an unprunable input")
        else:
            layout = np.repeat(x.layout, m) if m > 1 else x.layout
            ctx.set(out, Chan(1, rank, layout))

            def group_attr(keep, layout=x.layout):
                return _group_count(keep, layout)

            ctx.edit_attr("group", group_attr)
        ctx.slice_const(node.input[1], 0, layout)
        if bias:
            ctx.slice_const(bias, 0, layout)
        ctx.mac(MacTerm(ctx.node_index, coef, None, layout, c_in, c_out, depthwise=True))
        return

    layout = ctx.birth(out, c_out, 1, rank, (node.input[1], 0))
    if bias:
        ctx.slice_const(bias, 0, layout)
    if g == 1:
        ctx.slice_const(node.input[1], 0, layout)
        if x is not None:
            ctx.slice_const(node.input[1], 1, x.layout)
            ctx.consume(x.layout)
        ctx.mac(MacTerm(ctx.node_index, coef, x.layout if x is not None else None, layout,
                        c_in, c_out))
        return
    # General grouped conv: keep equal counts in every group on both sides.
    ctx.block(layout, g)
    if x is not None:
        if x.size != c_in:
            ctx.freeze(x.layout, "grouped Conv input size mismatch")
            ctx.freeze(layout, "grouped Conv input size mismatch")
            return
        ctx.block(x.layout, g)
        ctx.consume(x.layout)
        ctx.grouped_slice(node.input[1], layout, x.layout, g)
    else:
        ctx.slice_const(node.input[1], 0, layout)
    ctx.mac(MacTerm(ctx.node_index, coef, x.layout if x is not None else None, layout,
                    c_in, c_out, groups=g))


@rule("ConvTranspose")
def conv_transpose(ctx: Context, node: onnx.NodeProto) -> None:
    x = ctx.chan(node.input[0])
    w = ctx.const(node.input[1])
    out = node.output[0]
    if w is None:
        ctx.freeze_inputs("ConvTranspose with a computed weight")
        return
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else ""
    g = int(ctx.g.attr(node, "group", 1))
    c_in, c_out = int(w.shape[0]), int(w.shape[1]) * g
    rank = w.ndim
    kernel = math.prod(w.shape[2:])
    coef = _mul(_batch(ctx, node.input[0]), _spatial(ctx, node.input[0]), kernel)
    if x is not None and x.axis != 1:
        ctx.freeze(x.layout, "ConvTranspose input with channels off axis 1")
        x = None
    if g != 1:
        if x is not None:
            ctx.freeze(x.layout, "grouped ConvTranspose is not pruned")
        ctx.birth(out, c_out, 1, rank, (node.input[1], 1), frozen="grouped ConvTranspose")
        return
    layout = ctx.birth(out, c_out, 1, rank, (node.input[1], 1))
    ctx.slice_const(node.input[1], 1, layout)
    if bias:
        if ctx.const(bias) is None:
            ctx.freeze(layout, "ConvTranspose with a computed bias")
        else:
            ctx.slice_const(bias, 0, layout)
    if x is not None:
        ctx.slice_const(node.input[1], 0, x.layout)
        ctx.consume(x.layout)
    ctx.mac(MacTerm(ctx.node_index, coef, x.layout if x is not None else None, layout,
                    c_in, c_out))
