"""Evaluate shape arithmetic (Shape -> Gather -> Div -> Slice bounds, view(N, g, C/g, H, W)).

Exporters compute Slice bounds and Reshape targets from ``Shape()`` when inputs have dynamic dims
(``torch.chunk`` is the classic case). Evaluating those expressions with the channel count of the
sliced tensor scaled (C, 2C, ...) tells whether the bound follows the channel count
proportionally, which is what stays exact after pruning equal parts. Unknown dims are NaN.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from .graph import GraphView

__all__ = ["evaluate", "ShapeFn", "SHAPE_ARITH"]

ShapeFn = Callable[[str], "tuple[float, ...] | None"]

SHAPE_ARITH = frozenset({
    "Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Cast", "Add", "Sub", "Mul", "Div",
    "Floor", "Ceil", "Identity", "Max", "Min", "Neg", "Reshape",
})


def _axes_arg(view: GraphView, node: onnx.NodeProto, vals) -> list[int] | None:
    if view.opset >= 13:
        return [int(a) for a in vals[1]] if len(vals) > 1 and vals[1] is not None else None
    a = view.attr(node, "axes")
    return None if a is None else list(a)


def evaluate(view: GraphView, name: str, shape_of: ShapeFn, _depth: int = 0
             ) -> tuple[np.ndarray, bool] | None:
    """(value as float64 with NaN for unknowns, is_integer) or None if not shape arithmetic."""
    if _depth > 64:
        return None
    c = view.const(name)
    if c is not None:
        return c.astype(np.float64), c.dtype.kind in "iub"
    idx = view.producer.get(name)
    if idx is None:
        return None
    node = view.nodes[idx]
    op = node.op_type
    if op == "Shape":
        s = shape_of(node.input[0])
        if s is None:
            return None
        arr = np.asarray(s, dtype=np.float64)
        start = view.attr(node, "start", 0)
        end = view.attr(node, "end", None)
        return arr[start:end], True
    if op not in SHAPE_ARITH:
        return None
    args = []
    for i in node.input:
        if not i:
            args.append(None)
            continue
        r = evaluate(view, i, shape_of, _depth + 1)
        if r is None:
            return None
        args.append(r)
    vals = [a[0] if a is not None else None for a in args]
    is_int = args[0][1] if args and args[0] is not None else True
    x = vals[0]
    try:
        if op == "Gather":
            return np.take(x, vals[1].astype(np.int64), axis=view.attr(node, "axis", 0)), is_int
        if op == "Slice":
            if view.opset < 10:
                starts, ends = view.attr(node, "starts"), view.attr(node, "ends")
                axes = view.attr(node, "axes", list(range(len(starts))))
                steps = [1] * len(starts)
            else:
                starts, ends = vals[1].astype(np.int64), vals[2].astype(np.int64)
                axes = vals[3].astype(np.int64) if len(vals) > 3 and vals[3] is not None \
                    else range(len(starts))
                steps = vals[4].astype(np.int64) if len(vals) > 4 and vals[4] is not None \
                    else [1] * len(starts)
            sl = [slice(None)] * x.ndim
            for s, e, a, st in zip(starts, ends, axes, steps, strict=False):
                sl[int(a)] = slice(int(s), int(e), int(st))
            return x[tuple(sl)], is_int
        if op == "Concat":
            return np.concatenate([v.reshape(-1) if v.ndim == 0 else v for v in vals],
                                  axis=view.attr(node, "axis", 0)), is_int
        if op == "Unsqueeze":
            axes = _axes_arg(view, node, vals)
            out = x
            for a in sorted(int(a) % (x.ndim + len(axes)) for a in axes):
                out = np.expand_dims(out, a)
            return out, is_int
        if op == "Squeeze":
            axes = _axes_arg(view, node, vals)
            return (np.squeeze(x) if axes is None else np.squeeze(x, tuple(axes))), is_int
        if op == "Reshape":
            return x.reshape([int(v) for v in vals[1]]), is_int
        if op == "Cast":
            to = onnx.helper.tensor_dtype_to_np_dtype(view.attr(node, "to"))
            kind = np.dtype(to).kind
            return (np.trunc(x) if kind in "iu" else x), kind in "iub"
        if op == "Identity":
            return x, is_int
        if op == "Neg":
            return -x, is_int
        if op in ("Floor", "Ceil"):
            return (np.floor(x) if op == "Floor" else np.ceil(x)), is_int
        y = vals[1]
        if op == "Add":
            return x + y, is_int
        if op == "Sub":
            return x - y, is_int
        if op == "Mul":
            return x * y, is_int
        if op == "Div":
            with np.errstate(divide="ignore", invalid="ignore"):
                q = x / y
            return (np.trunc(q) if is_int else q), is_int
        if op == "Max":
            return np.maximum(x, y), is_int
        if op == "Min":
            return np.minimum(x, y), is_int
    except Exception:
        return None
    return None
