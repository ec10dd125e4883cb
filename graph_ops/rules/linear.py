"""Gemm (transA/transB) and MatMul with a constant weight: the dense layers of heads and MLPs."""

from __future__ import annotations

import math

import onnx

from . import DEFAULT_RULES, Context, MacTerm

rule = DEFAULT_RULES.register


@rule("Gemm")
def gemm(ctx: Context, node: onnx.NodeProto) -> None:
    a = ctx.chan(node.input[0])
    b = ctx.const(node.input[1])
    if b is None or b.ndim != 2:
        ctx.freeze_inputs("Gemm with a computed weight")
        return
    trans_a = int(ctx.g.attr(node, "transA", 0))
    trans_b = int(ctx.g.attr(node, "transB", 0))
    k_axis_b, n_axis_b = (1, 0) if trans_b else (0, 1)
    k, n = int(b.shape[k_axis_b]), int(b.shape[n_axis_b])
    if a is not None and a.axis != (0 if trans_a else 1):
        ctx.freeze(a.layout, "Gemm input with channels on its rows")
        a = None
    a_shape = ctx.g.shape(node.input[0])
    m = a_shape[1 if trans_a else 0] if a_shape else None
    coef = m if isinstance(m, int) else 1
    layout = ctx.birth(node.output[0], n, 1, 2, (node.input[1], n_axis_b))
    ctx.slice_const(node.input[1], n_axis_b, layout)
    if len(node.input) > 2 and node.input[2]:
        c_name = node.input[2]
        c = ctx.const(c_name)
        if c is None:
            ctx.freeze(layout, "Gemm with a computed bias")
        elif c.ndim >= 1 and c.shape[-1] == n and n != 1:
            ctx.slice_const(c_name, c.ndim - 1, layout)
        elif c.ndim >= 1 and c.shape[-1] not in (1,):
            ctx.freeze(layout, "Gemm bias does not broadcast over output channels")
    if a is not None:
        ctx.slice_const(node.input[1], k_axis_b, a.layout)
        ctx.consume(a.layout)
    ctx.mac(MacTerm(ctx.node_index, coef, a.layout if a is not None else None, layout, k, n))


@rule("MatMul")
def matmul(ctx: Context, node: onnx.NodeProto) -> None:
    a = ctx.chan(node.input[0])
    b = ctx.const(node.input[1])
    if b is None or b.ndim != 2 or ctx.chan(node.input[1]) is not None:
        ctx.freeze_inputs("MatMul without a constant 2-D weight")
        return
    a_rank = ctx.rank(node.input[0])
    if a_rank is None or a_rank < 2:
        ctx.freeze_inputs("MatMul input of unknown rank or rank 1")
        return
    if a is not None and a.axis != a_rank - 1:
        ctx.freeze(a.layout, "MatMul input with channels off the last axis")
        a = None
    k, n = int(b.shape[0]), int(b.shape[1])
    shape = ctx.g.shape(node.input[0])
    rows = shape[:-1] if shape else None
    coef = math.prod(d if isinstance(d, int) else 1 for d in rows) if rows is not None \
        else None
    layout = ctx.birth(node.output[0], n, max(a_rank, 2) - 1, max(a_rank, 2),
                       (node.input[1], 1))
    ctx.slice_const(node.input[1], 1, layout)
    if a is not None:
        ctx.slice_const(node.input[1], 0, a.layout)
        ctx.consume(a.layout)
    ctx.mac(MacTerm(ctx.node_index, coef, a.layout if a is not None else None, layout, k, n))
