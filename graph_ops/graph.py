"""A read-only view of a normalised model: constants, shapes, producers and consumers.

Rules look tensors up here instead of walking protobufs. Constants come from three places that
exporters use interchangeably: initializers, Constant nodes (Paddle) and small exact subgraphs over
constants (a per-channel vector reshaped to [1, C, 1, 1]), which are folded on demand in numpy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx
from onnx import numpy_helper

from .checks import real_inputs

__all__ = ["GraphView", "ConstSource", "Dim", "Shape"]

Dim = int | str | None
Shape = tuple[Dim, ...]

ConstKind = Literal["initializer", "constant_node", "derived"]


@dataclass(frozen=True)
class ConstSource:
    """Where a constant tensor lives, so an edit can be written back to the same place."""

    kind: ConstKind
    node_index: int = -1  # producing node for constant_node / derived


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


_RAW_DTYPES = {
    onnx.TensorProto.FLOAT: np.dtype("<f4"), onnx.TensorProto.DOUBLE: np.dtype("<f8"),
    onnx.TensorProto.FLOAT16: np.dtype("<f2"), onnx.TensorProto.INT64: np.dtype("<i8"),
    onnx.TensorProto.INT32: np.dtype("<i4"), onnx.TensorProto.INT8: np.dtype("i1"),
    onnx.TensorProto.UINT8: np.dtype("u1"),
}


def _tensor_to_array(t: onnx.TensorProto) -> np.ndarray:
    """Read-only zero-copy view of raw little-endian data (the common case for weights);
    numpy_helper for everything else. Weights are only ever read, never written in place."""
    dt = _RAW_DTYPES.get(t.data_type)
    if dt is not None and t.HasField("raw_data") and t.data_location != onnx.TensorProto.EXTERNAL:
        return np.frombuffer(t.raw_data, dtype=dt).reshape(tuple(t.dims))
    return numpy_helper.to_array(t)


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    for a in node.attribute:
        if a.name == "value":
            return _tensor_to_array(a.t)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
        if a.name == "value_int":
            return np.array(a.i, dtype=np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), dtype=np.int64)
    return None  # sparse or string constants are treated as opaque


def _fold(node: onnx.NodeProto, args: list[np.ndarray | None], opset: int) -> np.ndarray | None:
    """Evaluate exact, shape-only (or IEEE-exact element-wise) ops over constants."""
    op = node.op_type
    x = args[0] if args else None
    try:
        if op == "Identity":
            return x
        if op == "Cast":
            to = onnx.helper.tensor_dtype_to_np_dtype(_attr(node, "to"))
            return x.astype(to)
        if op == "Reshape":
            shape = [int(v) for v in args[1]]
            shape = [x.shape[i] if v == 0 and not _attr(node, "allowzero", 0) else v
                     for i, v in enumerate(shape)]
            return x.reshape(shape)
        if op == "Unsqueeze":
            axes = _attr(node, "axes") if opset < 13 else (list(args[1]) if len(args) > 1 else None)
            out = x
            rank = x.ndim + len(axes)
            for a in sorted(int(a) % rank for a in axes):
                out = np.expand_dims(out, a)
            return out
        if op == "Squeeze":
            axes = _attr(node, "axes") if opset < 13 else (list(args[1]) if len(args) > 1 else None)
            return np.squeeze(x) if axes is None else np.squeeze(x, tuple(int(a) for a in axes))
        if op == "Flatten":
            axis = _attr(node, "axis", 1) % max(x.ndim, 1) if x.ndim else 0
            return x.reshape(math.prod(x.shape[:axis]), -1)
        if op == "Transpose":
            perm = _attr(node, "perm")
            return np.transpose(x, perm)
        if op == "Concat":
            return np.concatenate(args, axis=_attr(node, "axis"))
        if op in ("Add", "Sub", "Mul", "Div") and all(a is not None for a in args):
            a, b = args
            if a.dtype != b.dtype:
                return None
            fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
            if op == "Div" and np.issubdtype(a.dtype, np.integer):
                return None
            return fn(a, b)
        if op == "Neg":
            return -x
    except Exception:
        return None
    return None


_FOLDABLE = frozenset(
    {"Identity", "Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Transpose", "Concat",
     "Add", "Sub", "Mul", "Div", "Neg"}
)


_INITIALIZER = ConstSource("initializer")


class GraphView:
    """Lookups over one normalised model. Built once per analysis; never mutates the model."""

    def __init__(self, model: onnx.ModelProto, shapes: Shapes | None = None,
                 nodes: list[onnx.NodeProto] | None = None) -> None:
        self.model = model
        self.graph = model.graph
        self.opset = next(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1
        )
        self.nodes: list[onnx.NodeProto] = list(model.graph.node) if nodes is None else nodes
        self.graph_outputs = {o.name for o in model.graph.output}
        self.initializers = {t.name: t for t in model.graph.initializer}
        self.graph_inputs = {i.name: i for i in real_inputs(model.graph)}
        self._const: dict[str, np.ndarray] = {}
        src = self.const_source = {name: _INITIALIZER for name in self.initializers}
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        # One walk in topological order: a folded constant's arguments are marked before it.
        for idx, node in enumerate(self.nodes):
            outs = list(node.output)
            ins = list(node.input)
            for out in outs:
                if out:
                    self.producer[out] = idx
            for inp in ins:
                if inp:
                    self.consumers.setdefault(inp, []).append(idx)
            op = node.op_type
            if op == "Constant" or op in _FOLDABLE:
                if node.domain not in ("", "ai.onnx") or not outs:
                    continue
                if op == "Constant":
                    src[outs[0]] = ConstSource("constant_node", idx)
                elif len(outs) == 1 and ins and all(i in src for i in ins if i):
                    src[outs[0]] = ConstSource("derived", idx)
        self.shapes = shapes if shapes is not None else Shapes()
        for inp in model.graph.input:
            if inp.name not in self.shapes and inp.name not in self.initializers:
                self.shapes[inp.name] = _value_info_shape(inp)

    # -- constants -------------------------------------------------------------------------
    def is_const(self, name: str) -> bool:
        return name in self.const_source and self.const(name) is not None

    def const(self, name: str) -> np.ndarray | None:
        """The constant's value, or None if the tensor is not a (foldable) constant."""
        if name in self._const:
            return self._const[name]
        src = self.const_source.get(name)
        if src is None:
            return None
        value: np.ndarray | None
        if src.kind == "initializer":
            value = _tensor_to_array(self.initializers[name])
        elif src.kind == "constant_node":
            value = _constant_node_value(self.nodes[src.node_index])
        else:
            node = self.nodes[src.node_index]
            args = [self.const(i) if i else None for i in node.input]
            value = None if any(a is None for a, i in zip(args, node.input, strict=True) if i) \
                else _fold(node, args, self.opset)
        self._const[name] = value
        return value

    # -- shapes ----------------------------------------------------------------------------
    def shape(self, name: str) -> Shape | None:
        value = self._const.get(name)
        if value is None and name in self.const_source:
            value = self.const(name)
        if value is not None:
            return tuple(int(d) for d in value.shape)
        return self.shapes.get(name)

    def rank(self, name: str) -> int | None:
        s = self.shape(name)
        return None if s is None else len(s)

    def attr(self, node: onnx.NodeProto, name: str, default=None):
        return _attr(node, name, default)

    def users(self, name: str) -> Iterable[onnx.NodeProto]:
        return (self.nodes[i] for i in self.consumers.get(name, ()))


def _value_info_shape(vi: onnx.ValueInfoProto) -> Shape | None:
    t = vi.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    return tuple(_dim(d) for d in t.tensor_type.shape.dim)


def _dim(d: onnx.TensorShapeProto.Dimension) -> Dim:
    which = d.WhichOneof("value")
    return d.dim_value if which == "dim_value" else d.dim_param if which == "dim_param" else None


def copy_fields(dst, src, skip: tuple[str, ...]) -> None:
    """Copy every set field of protobuf ``src`` into ``dst`` but those named in ``skip``."""
    for fd, value in src.ListFields():
        if fd.name in skip:
            continue
        if hasattr(value, "extend") and not isinstance(value, str | bytes):  # repeated field
            getattr(dst, fd.name).extend(value)
        elif fd.message_type is not None:
            getattr(dst, fd.name).CopyFrom(value)
        else:
            setattr(dst, fd.name, value)


def model_shell(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of everything but the graph's contents (opsets, IR version, metadata, functions;
    the graph's name): the start of a partial copy, which CopyFrom of the whole model and
    clearing would pay for in weights."""
    m = onnx.ModelProto()
    copy_fields(m, model, ("graph",))
    m.graph.name = model.graph.name
    return m


def _light_copy(model: onnx.ModelProto, nodes: list[onnx.NodeProto] | None = None
                ) -> onnx.ModelProto:
    """A copy for shape inference where large float weights become typed graph inputs: inference
    needs their shapes only, and serialising ResNet-50's weights costs most of a second."""
    m = model_shell(model)
    g, src = m.graph, model.graph
    g.node.extend(src.node if nodes is None else nodes)
    g.output.extend(src.output)
    declared = {i.name for i in src.input}
    g.input.extend(src.input)
    for t in src.initializer:
        size = math.prod(t.dims) if t.dims else 1
        if size > 4096 and t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                                           onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16):
            if t.name not in declared:
                g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type,
                                                                  list(t.dims)))
        else:
            g.initializer.append(t)
    if m.ir_version < 4:
        m.ir_version = 4  # inputs without initializers need IR >= 4; only shapes are read
    return m


class Shapes:
    """Tensor shapes read from value_info on first use: a rule asks for a few of them, and
    reading a protobuf shape costs more than the rule's own work on small graphs."""

    def __init__(self, infos: dict[str, onnx.ValueInfoProto] | None = None) -> None:
        self._infos = infos or {}
        self._read: dict[str, Shape | None] = {}

    def get(self, name: str) -> Shape | None:
        try:
            return self._read[name]
        except KeyError:
            vi = self._infos.get(name)
            s = self._read[name] = None if vi is None else _value_info_shape(vi)
            return s

    def __contains__(self, name: object) -> bool:
        return name in self._read or name in self._infos

    def __setitem__(self, name: str, shape: Shape | None) -> None:
        self._read[name] = shape


def infer_shapes(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None = None,
                 known: dict[str, np.ndarray] | None = None,
                 nodes: list[onnx.NodeProto] | None = None) -> Shapes:
    """Non-strict ONNX shape inference with data propagation, on a copy.

    ``input_shapes`` pins dynamic input dims (needed only for MACs). A symbolic leading (batch)
    dim is kept symbolic here; counting code substitutes 1 for it.
    """
    m = _light_copy(model, nodes)
    if input_shapes:
        for inp in m.graph.input:
            if inp.name in input_shapes:
                shape = input_shapes[inp.name]
                dims = inp.type.tensor_type.shape.dim
                del dims[:]
                for v in shape:
                    dims.add().dim_value = int(v)
    if known:  # computed shape arguments already evaluated: give them to inference as constants
        names = {}
        for key, value in known.items():
            fresh = f"{key}__shape_eval"
            names[key] = fresh
            m.graph.initializer.append(numpy_helper.from_array(value, fresh))
        for node in m.graph.node:
            for i, name in enumerate(node.input):
                if name in names:
                    node.input[i] = names[name]
    try:
        inferred = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    except Exception:
        inferred = m
    stand_ins = {t.name for t in model.graph.initializer}  # shapes come from their values
    g = inferred.graph
    return Shapes({vi.name: vi for part in (g.value_info, g.input, g.output) for vi in part
                   if vi.name not in stand_ins})


_SHAPE_ARGS = {"Slice": (1, 2, 3, 4), "Reshape": (1,), "Resize": (1, 2, 3), "Expand": (1,),
               "Split": (1,), "Tile": (1,), "Upsample": (1,), "ConstantOfShape": (0,),
               "Pad": (1,), "Range": (0, 1, 2)}


def computed_shape_args(view: GraphView) -> dict[str, np.ndarray]:
    """Values of non-constant shape arguments that evaluate fully from the known shapes."""
    from .shape_eval import evaluate

    def shape_of(t: str):
        s = view.shape(t)
        return None if s is None else tuple(d if isinstance(d, int) else np.nan for d in s)

    out: dict[str, np.ndarray] = {}
    for node in view.nodes:
        for i in _SHAPE_ARGS.get(node.op_type, ()):
            if i >= len(node.input) or not node.input[i] or view.is_const(node.input[i]):
                continue
            r = evaluate(view, node.input[i], shape_of)
            if r is None or np.isnan(r[0]).any():
                continue
            value, is_int = r
            out[node.input[i]] = value.astype(np.int64) if is_int else value.astype(np.float32)
    return out
