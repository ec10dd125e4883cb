"""Refusing requests and models that would otherwise be analysed into silently wrong numbers.

Why a module of its own: ``analyze`` is the one door every inspect, prune and compress goes
through (with a path or a ModelProto), and these checks are pure functions of the graph so they
run there once, before any shape inference or rule sees the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from numbers import Integral

import onnx

from .errors import GraphOpsError

__all__ = ["check_input_shapes", "check_defined", "real_inputs"]


def real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs a caller feeds: old exports (IR < 4) also list every initializer as an
    input, and those are weights, not inputs."""
    weights = {t.name for t in graph.initializer} | {
        t.values.name for t in graph.sparse_initializer}
    return [i for i in graph.input if i.name not in weights]


def _declared(dims: Iterable[onnx.TensorShapeProto.Dimension]) -> str:
    return ",".join(str(d.dim_value) if d.HasField("dim_value") else d.dim_param or "?"
                    for d in dims)


def check_input_shapes(graph: onnx.GraphProto, input_shapes: Mapping[str, tuple[int, ...]]
                       ) -> None:
    """Refuse pinned input shapes that do not fit the model, instead of counting MACs for a
    model that does not exist (or leaving them unknown).

    A pin must name a real input, have the input's rank and positive sizes, and agree with
    every static dim (a positive ``dim_value``); symbolic or unknown dims take any size. A
    static batch dim of 1 is static like any other: the exporter baked batch 1 into the graph
    (Reshape targets, fixed output shapes), so the model cannot run at another batch and
    figures for one would be fiction; re-export with a dynamic batch axis instead.

    Raises:
        GraphOpsError: naming the input, and the axis and both sizes (or both ranks).
    """
    inputs = {i.name: i for i in real_inputs(graph)}
    for name, shape in input_shapes.items():
        inp = inputs.get(name)
        if inp is None:
            raise GraphOpsError(f"--input-shape names '{name}', which is not an input of the "
                                f"model (inputs: {', '.join(inputs) or 'none'})")
        given = ",".join(str(d) for d in shape)
        for axis, size in enumerate(shape):
            if isinstance(size, bool) or not isinstance(size, Integral) or size <= 0:
                raise GraphOpsError(f"--input-shape gives '{name}' size {size!r} on axis "
                                    f"{axis}: sizes must be positive integers")
        if not inp.type.HasField("tensor_type"):
            raise GraphOpsError(f"--input-shape names '{name}', which is not a tensor input")
        if not inp.type.tensor_type.HasField("shape"):
            continue  # rank unknown: any shape is a valid pin
        dims = inp.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise GraphOpsError(
                f"--input-shape gives '{name}' rank {len(shape)} ({given}), but the model's "
                f"input '{name}' has rank {len(dims)} ({_declared(dims)})")
        for axis, (dim, size) in enumerate(zip(dims, shape, strict=True)):
            if dim.HasField("dim_value") and dim.dim_value > 0 and dim.dim_value != size:
                raise GraphOpsError(
                    f"--input-shape gives '{name}' size {size} on axis {axis}, but the model "
                    f"fixes axis {axis} of '{name}' to {dim.dim_value} ({_declared(dims)})")


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    out: list[onnx.GraphProto] = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            out.extend(a.graphs)
    return out


def check_defined(graph: onnx.GraphProto, outer: frozenset[str] = frozenset()) -> None:
    """Refuse a node that reads a tensor nothing defines: such a model cannot run, yet the
    rules would treat the tensor as an opaque input and prune would write the broken model out.

    Order is not checked (``sorted_nodes`` repairs it). '' is an absent optional input. If/Loop/
    Scan bodies may read any name of the scopes around them (``outer``).

    Raises:
        GraphOpsError: naming the node and the tensor.
    """
    defined = set(outer) | {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.values.name for t in graph.sparse_initializer}
    defined.update(o for node in graph.node for o in node.output)
    scope: frozenset[str] | None = None
    for idx, node in enumerate(graph.node):
        for name in node.input:
            if name and name not in defined:
                label = node.name or f"{node.op_type}#{idx}"
                raise GraphOpsError(f"node '{label}' reads '{name}', which no input, "
                                    "initializer or node defines")
        for sub in _subgraphs(node):
            scope = frozenset(defined) if scope is None else scope
            check_defined(sub, scope)
