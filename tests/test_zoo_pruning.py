"""The correctness contract on every zoo architecture, at opset 13 and 17, BN kept and folded."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from graph_ops import analyze, apply, count, importance, make_plan, prunable_mac_share
from graph_ops.plan import keep_count
from tests import zoo
from tests.oracle import assert_prunes_exactly, random_feeds, run

CASES = [(n, o, b) for n in zoo.NAMES for o in zoo.OPSETS for b in zoo.BN_MODES
         if b == "folded" or zoo.has_bn(n)]


@pytest.mark.parametrize("name,opset,bn", CASES, ids=[f"{n}-op{o}-{b}" for n, o, b in CASES])
def test_zoo_prunes_exactly(name, opset, bn):
    model = onnx.load(str(zoo.model_path(name, opset, bn)))
    a = assert_prunes_exactly(model, input_shapes=zoo.input_shapes(name), seeds=(0,))
    # Everything but the heads that produce graph outputs is prunable.
    assert prunable_mac_share(a) >= 0.95, [(g.id, g.frozen) for g in a.groups if g.frozen]


@pytest.mark.parametrize("name", zoo.NAMES)
def test_macs_match_torch_flop_counter(name):
    a = analyze(str(zoo.model_path(name, 17, "folded")), input_shapes=zoo.input_shapes(name))
    ours, theirs = count(a).macs, zoo.torch_macs(name)
    assert abs(ours - theirs) <= 0.01 * theirs, (ours, theirs)


def _kill_channels(a, model: onnx.ModelProto, fraction: float) -> tuple[onnx.ModelProto, dict]:
    """Zero the producer weights, biases and BN parameters of the lowest-index channels of every
    prunable group, so those channels are exactly dead."""
    from onnx import numpy_helper

    dead = np.zeros(a.num_classes, dtype=bool)
    ratio = 1.0 - fraction
    for g in a.prunable_groups:
        k = keep_count(g.size, ratio, 1, g.blocks)
        if g.blocks > 1:
            per = (g.size - k) // g.blocks
            for b in range(g.blocks):
                dead[g.classes[np.flatnonzero(g.block_of == b)[:per]]] = True
        else:
            dead[g.classes[: g.size - k]] = True
    dead_raw = dead[a.raw_to_class]
    zeroed: dict[str, np.ndarray] = {}
    view = a.view

    def zero(name: str, axis: int, layout: np.ndarray) -> None:
        arr = zeroed.get(name, view.const(name)).copy()
        idx = [slice(None)] * arr.ndim
        idx[axis] = np.flatnonzero(dead_raw[layout])
        arr[tuple(idx)] = 0
        zeroed[name] = arr

    safe_users = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub"}
    for (name, axis), sl in a.ctx.slices.items():
        users = list(view.users(name))
        is_bn_param = all(u.op_type == "BatchNormalization" and list(u.input).index(name) in
                          (1, 2, 3) for u in users)
        births = {b.weight for b in a.ctx.births}
        if (name, axis) in births or is_bn_param or (
                all(u.op_type in safe_users for u in users) and axis == 0
                and view.const(name).ndim == 1):
            zero(name, axis, sl.layout)
    for gs in a.ctx.grouped:
        zero(gs.tensor, 0, gs.out_layout)
    m = onnx.ModelProto()
    m.CopyFrom(a.model)
    for t in m.graph.initializer:
        if t.name in zeroed:
            t.CopyFrom(numpy_helper.from_array(zeroed[t.name].astype(
                numpy_helper.to_array(t).dtype), t.name))
    return m, zeroed


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "yolo", "resnext", "densenet"])
def test_dead_channels_pruned_by_l1_leave_outputs_unchanged(name):
    bn = "kept" if zoo.has_bn(name) else "folded"
    a0 = analyze(str(zoo.model_path(name, 17, bn)), input_shapes=zoo.input_shapes(name))
    dead_model, _ = _kill_channels(a0, a0.model, 0.25)
    a = analyze(dead_model, input_shapes=zoo.input_shapes(name))
    plan = make_plan(a, {g.id: 0.75 for g in a.prunable_groups}, importance(a, "l1"),
                     round_to=1)
    pruned = apply(a, plan)
    feeds = random_feeds(dead_model, zoo.input_shapes(name))
    for r, g in zip(run(dead_model, feeds), run(pruned, feeds), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(r).max())))
    assert count(a, plan.keep).macs < 0.8 * count(a).macs
