"""Broadcasting element-wise ops: bias adds, per-channel scales, residual Add/Mul, SE gates.

Two variable tensors that meet with their channel axes aligned must keep the same channel index set,
so their classes are unioned. A constant with the full channel count on that axis is sliced with
them; a broadcast (size-1) axis is left alone. A variable tensor without channel state but with the
full channel count (a graph input, say) cannot be pruned, so the channels are frozen.
"""

from __future__ import annotations

import onnx

from . import DEFAULT_RULES, Chan, Context

BROADCASTING = (
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where",
    "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor", "Mod",
    "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor",
)


@DEFAULT_RULES.register(*BROADCASTING)
def broadcast(ctx: Context, node: onnx.NodeProto) -> None:
    names = [n for n in node.input if n]
    state = [ctx.chan(n) for n in names]
    chans = [(n, c) for n, c in zip(names, state, strict=True) if c is not None]
    if not chans:
        return
    ranks = [c.rank if c is not None else ctx.g.rank(n)
             for n, c in zip(names, state, strict=True)]
    if any(r is None for r in ranks):
        ctx.freeze_inputs(f"{node.op_type} input of unknown rank")
        return
    out_rank = max(ranks)
    aligned = {out_rank - c.rank + c.axis for _, c in chans}
    if len(aligned) != 1 or len({c.size for _, c in chans}) != 1:
        ctx.freeze_inputs(f"{node.op_type} mixes channel axes or channel counts")
        return
    axis = aligned.pop()
    first = chans[0][1]
    for _, c in chans[1:]:
        ctx.union(first.layout, c.layout)
    size = first.size
    for name, rank, c in zip(names, ranks, state, strict=True):
        if c is not None:
            continue
        local = axis - (out_rank - rank)
        if local < 0:
            continue  # the axis is broadcast in from nothing
        shape = ctx.g.shape(name)
        dim = shape[local] if shape is not None else None
        if dim == 1 and size != 1:
            continue
        if ctx.g.is_const(name):
            if dim == size:
                ctx.slice_const(name, local, first.layout)
                continue
            ctx.freeze(first.layout, f"constant '{name}' does not broadcast over channels")
            return
        if size == 1 and dim == 1:
            continue
        ctx.freeze(first.layout, f"coupled to tensor '{name}' whose channels cannot be pruned")
        return
    ctx.set(node.output[0], Chan(axis, out_rank, first.layout))
