"""The correctness oracle for pruning, shared by the tests.

Pruning channel set S must compute what the original model computes with every channel of S
zeroed (a 0/1 mask Mul) on every tensor that carries it. ``masked_model`` builds that reference.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from graph_ops import Analysis

_FLOAT = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}


def _dtypes(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(
        inferred.graph.output
    ):
        out[vi.name] = vi.type.tensor_type.elem_type
    return out


def masked_model(analysis: Analysis, keep: np.ndarray) -> onnx.ModelProto:
    """The original model with a 0/1 channel mask multiplied onto every channel tensor."""
    model = onnx.ModelProto()
    model.CopyFrom(analysis.model)
    keep_raw = analysis.raw_keep(keep)
    dtypes = _dtypes(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    extra: list[tuple[onnx.NodeProto, onnx.NodeProto]] = []
    for name, chan in analysis.ctx.state.items():
        mask = keep_raw[chan.layout]
        if mask.all() or name not in producer:
            continue
        dt = dtypes.get(name)
        if dt not in _FLOAT:
            continue
        np_dt = helper.tensor_dtype_to_np_dtype(dt)
        shape = [chan.size] + [1] * (chan.rank - chan.axis - 1)
        const = numpy_helper.from_array(mask.astype(np_dt).reshape(shape), f"{name}__mask")
        model.graph.initializer.append(const)
        node = producer[name]
        raw = f"{name}__unmasked"
        node.output[list(node.output).index(name)] = raw
        extra.append((node, helper.make_node("Mul", [raw, const.name], [name])))
    nodes = list(model.graph.node)
    for prod, mul in extra:
        nodes.insert(nodes.index(prod) + 1, mul)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def random_feeds(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None,
                 seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        if shapes and inp.name in shapes:
            shape = shapes[inp.name]
        else:
            shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                          for d in tt.shape.dim)
        dt = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        feeds[inp.name] = rng.standard_normal(shape).astype(dt)
    return feeds


def random_keep(analysis: Analysis, seed: int = 0, low: float = 0.2) -> np.ndarray:
    """A random keep set on every prunable group (respecting grouped-conv blocks)."""
    from graph_ops import make_plan

    rng = np.random.default_rng(seed)
    policy = {}
    for g in analysis.prunable_groups:
        if g.size < 2:
            continue
        if g.blocks > 1:
            per = g.size // g.blocks
            k = max(1, int(rng.integers(1, per + 1)))
            idx = np.concatenate([rng.choice(np.flatnonzero(g.block_of == b), k, replace=False)
                                  for b in range(g.blocks)])
        else:
            k = max(1, int(round(g.size * rng.uniform(low, 1.0))))
            idx = rng.choice(g.size, k, replace=False)
        policy[g.id] = sorted(int(i) for i in idx)
    return make_plan(analysis, policy, np.zeros(analysis.num_classes)).keep


def _strict_ok(model: onnx.ModelProto) -> bool:
    try:
        onnx.shape_inference.infer_shapes(model, strict_mode=True)
        return True
    except Exception:
        return False


def _io(model: onnx.ModelProto):
    inits = {t.name for t in model.graph.initializer}
    return ([(i.name, i.type.SerializeToString()) for i in model.graph.input
             if i.name not in inits],
            [(o.name, o.type.SerializeToString()) for o in model.graph.output])


def assert_prunes_exactly(model: onnx.ModelProto, *, input_shapes=None, seeds=(0, 1),
                          min_prunable: int = 1, analysis: Analysis | None = None) -> Analysis:
    """The full correctness contract on one model: keep-all is bit-identical; random keep sets
    match the masked oracle (rtol 1e-4); the result passes the full checker, strict shape
    inference where the input did, loads in ORT and keeps input/output names, dtypes, shapes."""
    from graph_ops import analyze, apply
    from graph_ops.plan import PrunePlan

    a = analysis or analyze(model, input_shapes=input_shapes)
    assert len(a.prunable_groups) >= min_prunable, [(g.id, g.frozen) for g in a.groups]
    feeds = random_feeds(model, input_shapes)
    orig = run(model, feeds)
    same = apply(a, PrunePlan(a.keep_all(), {}))
    for x, y in zip(run(same, feeds), orig, strict=True):
        np.testing.assert_array_equal(x, y)
    strict = _strict_ok(model)
    for seed in seeds:
        keep = random_keep(a, seed)
        pruned = apply(a, PrunePlan(keep, {}))
        onnx.checker.check_model(pruned, full_check=True)
        if strict:
            onnx.shape_inference.infer_shapes(pruned, strict_mode=True)
        assert _io(pruned) == _io(model)
        ref = run(masked_model(a, keep), feeds)
        got = run(pruned, feeds)
        for r, g in zip(ref, got, strict=True):
            scale = max(1.0, float(np.abs(r).max()))
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 * scale)
        assert pruned.ByteSize() < model.ByteSize() or keep.all()
    return a
