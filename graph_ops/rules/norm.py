"""Normalisations and softmax: per-channel ones slice their parameters, cross-channel ones freeze."""

from __future__ import annotations

import onnx

from . import DEFAULT_RULES, Context

rule = DEFAULT_RULES.register


def _per_channel(ctx: Context, node: onnx.NodeProto, params: range, what: str) -> None:
    x = ctx.chan(node.input[0])
    if x is None:
        return
    if x.axis != 1:
        ctx.freeze(x.layout, f"{node.op_type} over channels off axis 1")
        return
    for i in params:
        if i >= len(node.input) or not node.input[i]:
            continue
        c = ctx.const(node.input[i])
        if c is None or c.ndim != 1 or c.shape[0] != x.size:
            ctx.freeze(x.layout, f"{node.op_type} with computed or odd {what}")
            return
    for out in node.output[1:]:
        if out and (ctx.g.consumers.get(out) or out in ctx.g.graph_outputs):
            ctx.freeze(x.layout, f"{node.op_type} training-mode outputs are used")
            return
    for i in params:
        if i < len(node.input) and node.input[i]:
            ctx.slice_const(node.input[i], 0, x.layout)
    ctx.set(node.output[0], x)


@rule("BatchNormalization")
def batch_norm(ctx: Context, node: onnx.NodeProto) -> None:
    _per_channel(ctx, node, range(1, 5), "parameters")


@rule("InstanceNormalization")
def instance_norm(ctx: Context, node: onnx.NodeProto) -> None:
    _per_channel(ctx, node, range(1, 3), "parameters")


def _axis_rule(default_axis: int | None, reason: str, all_from_axis: bool = False):
    """Ops normalising over one axis (or every axis from ``axis`` on): separable elsewhere."""

    def fn(ctx: Context, node: onnx.NodeProto) -> None:
        x = ctx.chan(node.input[0])
        if x is None:
            return
        default = default_axis
        if node.op_type in ("Softmax", "LogSoftmax", "Hardmax") and ctx.g.opset < 13:
            default, coerced = 1, True
        else:
            coerced = all_from_axis
        axis = int(ctx.g.attr(node, "axis", default)) % x.rank
        touches = x.axis >= axis if coerced else x.axis == axis
        if touches:
            ctx.freeze(x.layout, f"{node.op_type} {reason}")
            return
        ctx.set(node.output[0], x)

    return fn


DEFAULT_RULES.register("Softmax", "LogSoftmax", "Hardmax")(
    _axis_rule(-1, "normalises over the channel axis"))
DEFAULT_RULES.register("LpNormalization")(_axis_rule(-1, "normalises over the channel axis"))
DEFAULT_RULES.register("LayerNormalization")(
    _axis_rule(-1, "normalises over the channel axis", all_from_axis=True))


@rule("GroupNormalization", "LRN", "MeanVarianceNormalization")
def cross_channel(ctx: Context, node: onnx.NodeProto) -> None:
    ctx.freeze_inputs(f"{node.op_type} mixes channels (not channel-separable)")
