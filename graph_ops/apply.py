"""The one place that edits a model: ``apply(analysis, plan) -> ModelProto``.

Every surviving tensor keeps its name; constants are sliced where they live (initializer, Constant
node, or a folded constant expression, which is replaced by a Constant node of the same name);
small integer arguments (Split sizes, Slice bounds, Reshape targets) get private copies when shared.
Stale value_info is dropped. The analysis is never mutated, so one analysis serves many plans.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .analyze import Analysis
from .edits import kept_positions
from .graph import _RAW_DTYPES, copy_fields
from .plan import PrunePlan

__all__ = ["apply"]


def _sliced_constants(analysis: Analysis, keep_raw: np.ndarray) -> dict[str, np.ndarray]:
    view, ctx = analysis.view, analysis.ctx
    out: dict[str, np.ndarray] = {}
    per_tensor: dict[str, dict[int, np.ndarray]] = {}
    for (name, axis), sl in ctx.slices.items():
        pos = kept_positions(sl.layout, keep_raw)
        if pos.size != sl.layout.size:
            per_tensor.setdefault(name, {})[axis] = pos
    for name, axes in per_tensor.items():
        arr = view.const(name)
        # One take per axis (faster than one np.ix_ gather), the axis that keeps the smallest
        # fraction first so later takes copy less.
        for axis, pos in sorted(axes.items(), key=lambda kv: kv[1].size / arr.shape[kv[0]]):
            arr = np.take(arr, pos, axis=axis)
        out[name] = arr
    for gs in ctx.grouped:
        w = out.get(gs.tensor, view.const(gs.tensor))
        out_pos = kept_positions(gs.out_layout, keep_raw)
        per_out = gs.out_layout.size // gs.groups
        per_in = gs.in_layout.size // gs.groups
        # Equal kept counts per block (the plan guarantees it), so local input positions form
        # a [groups, k] table and each kept output row picks its block's row.
        mask = keep_raw[gs.in_layout].reshape(gs.groups, per_in)
        local = np.nonzero(mask)[1].reshape(gs.groups, -1)
        if out_pos.size == gs.out_layout.size and local.shape[1] == per_in:
            continue
        out[gs.tensor] = w[out_pos[:, None], local[out_pos // per_out]]
    return out


def _value(v, like: np.ndarray | None) -> np.ndarray:
    arr = np.asarray(v)
    if like is not None:
        arr = arr.astype(like.dtype).reshape(like.shape if arr.size == like.size else arr.shape)
    return arr


def _set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    if value is not None:
        node.attribute.append(helper.make_attribute(name, value))


_RAW_TYPES = {dt: t for t, dt in _RAW_DTYPES.items()}  # the dtypes read as raw bytes


def _write_tensor(t: onnx.TensorProto, name: str, value: np.ndarray) -> None:
    """Fill ``t`` in place: building a TensorProto with numpy_helper and appending it copies the
    weights twice more."""
    dt = _RAW_TYPES.get(value.dtype)
    if dt is None:  # bool, strings, exotic dtypes: numpy_helper knows their encodings
        t.CopyFrom(numpy_helper.from_array(value, name))
        return
    t.name = name
    t.data_type = dt
    t.dims.extend(value.shape)
    t.raw_data = np.ascontiguousarray(value).tobytes()


def _constant_node(name: str, value: np.ndarray, like: onnx.NodeProto | None = None
                   ) -> onnx.NodeProto:
    node = onnx.NodeProto(op_type="Constant", output=[name])
    attr = node.attribute.add()
    attr.name = "value"
    attr.type = onnx.AttributeProto.TENSOR
    _write_tensor(attr.t, name, value)
    if like is not None:
        node.name = like.name
        node.doc_string = like.doc_string
    return node


def apply(analysis: Analysis, plan: PrunePlan) -> onnx.ModelProto:
    """Return a new, pruned model. With a keep-everything plan, the graph is unchanged."""
    view = analysis.view
    keep_raw = analysis.raw_keep(plan.keep)
    values = _sliced_constants(analysis, keep_raw)

    # Small integer arguments recomputed from the keep mask.
    input_edits: dict[int, dict[int, np.ndarray]] = {}
    attr_edits: dict[int, dict[str, object]] = {}
    for e in analysis.ctx.value_edits:
        node = view.nodes[e.node_index]
        if e.input_index >= 0:
            name = node.input[e.input_index] if e.input_index < len(node.input) else ""
            old = view.const(name) if name else None
            new = _value(e.compute(keep_raw), old)
            if old is not None and old.shape == new.shape and np.array_equal(old, new):
                continue
            input_edits.setdefault(e.node_index, {})[e.input_index] = new
        else:
            new_attr = e.compute(keep_raw) if e.compute is not None else None
            old_attr = view.attr(node, e.attr)
            if new_attr is not None and old_attr is not None and \
                    list(np.atleast_1d(new_attr)) == list(np.atleast_1d(old_attr)):
                continue
            attr_edits.setdefault(e.node_index, {})[e.attr] = new_attr

    model = analysis.model
    src = view.const_source
    replace_node: dict[int, onnx.NodeProto] = {}
    new_inits: dict[str, np.ndarray] = {}
    for name, arr in values.items():
        s = src[name]
        if s.kind == "initializer":
            new_inits[name] = arr
        else:
            replace_node[s.node_index] = _constant_node(name, arr, view.nodes[s.node_index])

    extra_before: dict[int, list[onnx.NodeProto]] = {}
    node_inputs: dict[int, dict[int, str]] = {}
    for ni, edits in input_edits.items():
        node = view.nodes[ni]
        for ii, arr in edits.items():
            name = node.input[ii] if ii < len(node.input) else ""
            s = src.get(name) if name else None
            private = s is not None and s.kind != "derived" and \
                len(view.consumers.get(name, ())) == 1 and name not in view.graph_outputs
            if private and s.kind == "initializer":
                new_inits[name] = arr
            elif private:
                replace_node[s.node_index] = _constant_node(name, arr, view.nodes[s.node_index])
            else:
                fresh = f"{name or node.output[0] + '__arg'}__pruned_{ni}_{ii}"
                extra_before.setdefault(ni, []).append(_constant_node(fresh, arr))
                node_inputs.setdefault(ni, {})[ii] = fresh

    out = onnx.ModelProto()
    out.CopyFrom(_shell(analysis))
    g = out.graph
    for idx, node in enumerate(view.nodes):
        g.node.extend(extra_before.get(idx, ()))
        if idx in replace_node:
            g.node.append(replace_node[idx])
            continue
        if idx in attr_edits or idx in node_inputs:
            n = onnx.NodeProto()
            n.CopyFrom(node)
            for a, v in attr_edits.get(idx, {}).items():
                _set_attr(n, a, v)
            for ii, name in node_inputs.get(idx, {}).items():
                while len(n.input) <= ii:  # an optional input that was absent (Split sizes)
                    n.input.append("")
                n.input[ii] = name
            g.node.append(n)
        else:
            g.node.append(node)
    for t in model.graph.initializer:
        arr = new_inits.get(t.name)
        if arr is None:
            g.initializer.append(t)
        else:
            _write_tensor(g.initializer.add(), t.name, arr)
    for inp in model.graph.input:  # old IRs list weights as inputs too: keep declarations true
        vi = g.input.add()
        vi.CopyFrom(inp)
        if inp.name in new_inits and inp.name in values:
            dims = vi.type.tensor_type.shape.dim
            del dims[:]
            for d in values[inp.name].shape:
                dims.add().dim_value = int(d)
    if replace_node or node_inputs:  # only replaced or bypassed sources can leave dead nodes
        _remove_dead(g)
    return out


def _shell(analysis: Analysis) -> onnx.ModelProto:
    """The model without nodes, initializers, inputs and value_info (cached per analysis), so
    apply never copies the bulk of the weights twice."""
    cached = analysis.__dict__.get("_apply_shell")
    if cached is None:
        cached = onnx.ModelProto()
        copy_fields(cached, analysis.model, ("graph",))
        copy_fields(cached.graph, analysis.model.graph,
                    ("node", "initializer", "input", "value_info"))
        analysis.__dict__["_apply_shell"] = cached
    return cached


def _remove_dead(g: onnx.GraphProto) -> None:
    """Drop nodes and initializers that nothing reads any more (the sources of folded constants
    that were replaced). Graph outputs are never touched."""
    used = {o.name for o in g.output}
    keep_nodes = []
    for node in reversed(g.node):
        if any(o in used for o in node.output) or not node.output:
            keep_nodes.append(node)
            used.update(node.input)
            for a in node.attribute:
                if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                    used.update(_subgraph_names(a))
    if len(keep_nodes) != len(g.node):
        keep_nodes.reverse()
        del g.node[:]
        g.node.extend(keep_nodes)
    inits = [t for t in g.initializer if t.name in used]
    if len(inits) != len(g.initializer):
        dropped = {t.name for t in g.initializer} - used
        del g.initializer[:]
        g.initializer.extend(inits)
        inputs = [i for i in g.input if i.name not in dropped]
        del g.input[:]
        g.input.extend(inputs)


def _subgraph_names(a: onnx.AttributeProto) -> set[str]:
    graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
    names: set[str] = set()
    for sub in graphs:
        for n in sub.node:
            names.update(n.input)
            for aa in n.attribute:
                if aa.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                    names |= _subgraph_names(aa)
    return names
