"""One tiny hand-built graph per topology, checked against the masked oracle (the way
onnx-graphsurgeon and OnnxSlim test their passes)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graph_ops import analyze, apply, make_plan, uniform_policy
from graph_ops.importance import importance
from tests.oracle import assert_prunes_exactly

RNG = np.random.default_rng(0)


def W(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def build(nodes, inits: dict[str, np.ndarray], out_shape=("N", 5), opset: int = 17,
          in_shape=("N", 3, 8, 8), outputs=("y",), ir: int | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, list(out_shape)) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if ir:
        m.ir_version = ir
    onnx.checker.check_model(m, full_check=True)
    return m


def conv(name, x, cin, cout, k=3, group=1, bias=True):
    inits = {f"{name}.w": W(cout, cin // group, k, k)}
    ins = [x, f"{name}.w"]
    if bias:
        inits[f"{name}.b"] = W(cout)
        ins.append(f"{name}.b")
    node = helper.make_node("Conv", ins, [name], pads=[k // 2] * 4, group=group)
    return node, inits


def head(x, c, out="y"):
    """GAP -> Flatten -> Gemm logits (the frozen output)."""
    return [helper.make_node("GlobalAveragePool", [x], [f"{x}.gap"]),
            helper.make_node("Flatten", [f"{x}.gap"], [f"{x}.flat"]),
            helper.make_node("Gemm", [f"{x}.flat", "fc.w", "fc.b"], [out], transB=1)], \
        {"fc.w": W(5, c), "fc.b": W(5)}


def chain(*parts):
    nodes, inits = [], {}
    for n, i in parts:
        nodes.extend(n if isinstance(n, list) else [n])
        inits.update(i)
    return nodes, inits


def test_residual_add_couples_channels_and_bn():
    n, i = chain(conv("c1", "x", 3, 8), conv("c2", "c1", 8, 8), conv("c3", "c2", 8, 8),
                 ([helper.make_node("Add", ["c1", "c3"], ["r"]),
                   helper.make_node("BatchNormalization", ["r", "s", "b", "m", "v"], ["bn"]),
                   helper.make_node("Relu", ["bn"], ["a"])],
                  {"s": W(8), "b": W(8), "m": W(8), "v": np.abs(W(8)) + 0.5}),
                 head("a", 8))
    a = assert_prunes_exactly(build(n, i, opset=13))
    ids = {g.id: g for g in a.groups}
    assert ids["c1"].producers == ("Conv#0(c1)", "Conv#2(c3)")
    assert ids["c2"].prunable and ids["y"].frozen == "reaches graph output 'y'"


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_concat_and_split_offsets(opset):
    split_kw = {}
    split_inputs = ["cat"]
    inits = {}
    if opset < 13:
        split_kw["split"] = [4, 12]
    elif opset < 18:
        split_inputs.append("sizes")
        inits["sizes"] = np.array([4, 12], dtype=np.int64)
    n, i = chain(conv("a", "x", 3, 6), conv("b", "x", 3, 10),
                 (helper.make_node("Concat", ["a", "b"], ["cat"], axis=1), {}),
                 (helper.make_node("Split", split_inputs, ["s0", "s1"], axis=1, **split_kw),
                  inits) if opset < 18 else
                 (helper.make_node("Split", ["cat"], ["s0", "s1"], axis=1, num_outputs=2), {}),
                 conv("c0", "s0", 4 if opset < 18 else 8, 6),
                 conv("c1", "s1", 12 if opset < 18 else 8, 6),
                 (helper.make_node("Add", ["c0", "c1"], ["z"]), {}), head("z", 6))
    assert_prunes_exactly(build(n, i, opset=opset))


def test_constant_slice_gather_on_channels():
    n, i = chain(conv("a", "x", 3, 12),
                 (helper.make_node("Slice", ["a", "st", "en", "ax"], ["sl"]),
                  {"st": np.array([2], np.int64), "en": np.array([9], np.int64),
                   "ax": np.array([1], np.int64)}),
                 (helper.make_node("Gather", ["a", "gi"], ["ga"], axis=1),
                  {"gi": np.array([11, 0, 5, 5, 3], np.int64)}),
                 (helper.make_node("Concat", ["sl", "ga"], ["cat"], axis=1), {}),
                 conv("c", "cat", 12, 4), head("c", 4))
    assert_prunes_exactly(build(n, i, opset=13))


@pytest.mark.parametrize("mult", [1, 2])
def test_depthwise_follows_its_input(mult):
    n, i = chain(conv("a", "x", 3, 8), conv("dw", "a", 8, 8 * mult, group=8),
                 conv("pw", "dw", 8 * mult, 6, k=1), head("pw", 6))
    a = assert_prunes_exactly(build(n, i))
    assert len(a.prunable_groups) == 2  # a (with dw), pw


def test_grouped_conv_keeps_equal_counts_per_group():
    n, i = chain(conv("a", "x", 3, 16), conv("g", "a", 16, 8, group=4), conv("p", "g", 8, 4),
                 head("p", 4))
    a = assert_prunes_exactly(build(n, i))
    g = {x.id: x for x in a.groups}
    assert g["a"].blocks == 4 and g["g"].blocks == 4
    plan = make_plan(a, uniform_policy(a, 0.5), importance(a), round_to=1)
    assert len(plan.kept["a"]) == 8 and len(plan.kept["g"]) == 4
    plan = make_plan(a, uniform_policy(a, 0.25), importance(a), round_to=8)
    assert len(plan.kept["a"]) == 8 and "g" not in plan.kept  # multiples of lcm(4, 8)


def test_channel_shuffle_reshape_transpose():
    shape1 = np.array([0, 2, 8, 8, 8], np.int64)
    shape2 = np.array([0, 16, 8, 8], np.int64)
    n, i = chain(conv("a", "x", 3, 8), conv("b", "x", 3, 8),
                 ([helper.make_node("Concat", ["a", "b"], ["cat"], axis=1),
                   helper.make_node("Reshape", ["cat", "s1"], ["r1"]),
                   helper.make_node("Transpose", ["r1"], ["t"], perm=[0, 2, 1, 3, 4]),
                   helper.make_node("Reshape", ["t", "s2"], ["r2"])],
                  {"s1": shape1, "s2": shape2}),
                 conv("c", "r2", 16, 4), head("c", 4))
    a = assert_prunes_exactly(build(n, i))
    assert {g.id for g in a.prunable_groups} >= {"a", "c"}


@pytest.mark.parametrize("channels_last", [False, True])
def test_flatten_into_gemm_head(channels_last):
    nodes = [helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[2, 2], strides=[2, 2])]
    src = "p"
    if channels_last:
        nodes.append(helper.make_node("Transpose", ["p"], ["pt"], perm=[0, 2, 3, 1]))
        src = "pt"
    nodes += [helper.make_node("Reshape", [src, "shape"], ["f"]),
              helper.make_node("Gemm", ["f", "fc1.w", "fc1.b"], ["h"]),
              helper.make_node("Relu", ["h"], ["hr"]),
              helper.make_node("MatMul", ["hr", "fc2.w"], ["y"])]
    n, i = chain(conv("a", "x", 3, 6),
                 (nodes, {"shape": np.array([-1, 96], np.int64), "fc1.w": W(96, 10),
                          "fc1.b": W(10), "fc2.w": W(10, 5)}))
    assert_prunes_exactly(build(n, i))


def test_se_gate_and_hardswish_and_layer_scale():
    n, i = chain(conv("a", "x", 3, 8),
                 ([helper.make_node("HardSwish", ["a"], ["h"]),
                   helper.make_node("GlobalAveragePool", ["h"], ["sq"])], {}),
                 conv("r", "sq", 8, 4, k=1), (helper.make_node("Relu", ["r"], ["rr"]), {}),
                 conv("e", "rr", 4, 8, k=1),
                 ([helper.make_node("HardSigmoid", ["e"], ["gate"]),
                   helper.make_node("Mul", ["h", "gate"], ["se"]),
                   helper.make_node("Reshape", ["ls", "lsshape"], ["ls4"]),
                   helper.make_node("Mul", ["se", "ls4"], ["scaled"])],
                  {"ls": W(8), "lsshape": np.array([1, 8, 1, 1], np.int64)}),
                 head("scaled", 8))
    a = assert_prunes_exactly(build(n, i))
    assert {g.id for g in a.prunable_groups} == {"a", "r"}


def test_unknown_op_and_channel_reductions_freeze_with_reason():
    n, i = chain(conv("a", "x", 3, 8), conv("b", "x", 3, 8),
                 ([helper.make_node("LRN", ["a"], ["l"], size=3),
                   helper.make_node("Softmax", ["b"], ["s"], axis=1),
                   helper.make_node("Add", ["l", "s"], ["z"])], {}),
                 conv("c", "z", 8, 4), head("c", 4))
    a = analyze(build(n, i))
    g = {x.id: x for x in a.groups}
    assert not g["a"].prunable and "LRN" in g["a"].frozen and g["a"].frozen_node == "LRN#2(l)"
    assert g["c"].prunable


def test_custom_domain_op_freezes():
    n, i = chain(conv("a", "x", 3, 8),
                 (helper.make_node("Mystery", ["a"], ["m"], domain="com.example"), {}),
                 conv("c", "m", 8, 4), head("c", 4))
    g = helper.make_graph(n, "t", [helper.make_tensor_value_info("x", 1, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", 1, ["N", 5])],
                          [numpy_helper.from_array(v, k) for k, v in i.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid("com.example", 1)])
    a = analyze(m)
    assert {x.id: x for x in a.groups}["a"].frozen == "unsupported op com.example.Mystery"


def test_constant_node_weights_old_ir_inputs_and_stale_value_info():
    """Paddle-style Constant weights, weights also listed as graph inputs (IR 3), and
    value_info that no longer matches: all normalised away, pruning stays exact."""
    n, i = chain(conv("a", "x", 3, 8), conv("b", "a", 8, 6), head("b", 6))
    consts = [helper.make_node("Constant", [], ["a.w"], value=numpy_helper.from_array(
        i.pop("a.w"), "a.w"))]
    graph = helper.make_graph(
        consts + n, "t",
        [helper.make_tensor_value_info("x", 1, [1, 3, 8, 8])] +
        [helper.make_tensor_value_info(k, 1, list(v.shape)) for k, v in i.items()],
        [helper.make_tensor_value_info("y", 1, [1, 5])],
        [numpy_helper.from_array(v, k) for k, v in i.items()],
        value_info=[helper.make_tensor_value_info("a", 1, [1, 99, 8, 8])],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    m.ir_version = 3
    a = assert_prunes_exactly(m)
    assert len(a.prunable_groups) == 2


def test_policy_with_explicit_indices_and_errors():
    from graph_ops import PolicyError

    n, i = chain(conv("a", "x", 3, 8), conv("b", "a", 8, 6), head("b", 6))
    a = analyze(build(n, i))
    plan = make_plan(a, {"a": [0, 3, 7]}, importance(a))
    assert list(plan.kept["a"]) == [0, 3, 7]
    for bad in ({"nope": 0.5}, {"a": 0.0}, {"a": 1.5}, {"a": [9]}, {"a": []}, {"y": 0.5}):
        with pytest.raises(PolicyError):
            make_plan(a, bad, importance(a))
    pruned = apply(a, plan)
    w = {t.name: t for t in pruned.graph.initializer}["a.w"]
    assert list(w.dims) == [3, 3, 3, 3]


@pytest.mark.parametrize("opset", [11, 13, 17, 18, 21])
def test_opset_dependent_signatures(opset):
    """ReduceMean / Squeeze / Unsqueeze / Pad / Resize change from attributes to inputs across
    opsets 11-21; the same network must prune exactly at each of them."""
    i: dict[str, np.ndarray] = {}
    axes = np.array([2, 3], np.int64)
    if opset >= 18:
        red = helper.make_node("ReduceMean", ["a", "rax"], ["m"], keepdims=0)
        i["rax"] = axes
    else:
        red = helper.make_node("ReduceMean", ["a"], ["m"], axes=[2, 3], keepdims=0)
    if opset >= 13:
        unsq = helper.make_node("Unsqueeze", ["m", "uax"], ["u"])
        i["uax"] = axes
    else:
        unsq = helper.make_node("Unsqueeze", ["m"], ["u"], axes=[2, 3])
    pads = np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)
    pad = helper.make_node("Pad", ["g", "pads"], ["pd"], mode="constant")
    i["pads"] = pads
    resize = helper.make_node("Resize", ["pd", "roi" if opset < 13 else "", "scales"], ["rs"],
                              mode="nearest")
    if opset < 13:  # roi is a required input before opset 13
        i["roi"] = np.zeros(0, np.float32)
    i["scales"] = np.array([1, 1, 2, 2], np.float32)
    n, ii = chain(conv("a", "x", 3, 8),
                  ([red, unsq], {}), conv("e", "u", 8, 8, k=1),
                  ([helper.make_node("Sigmoid", ["e"], ["s"]),
                    helper.make_node("Mul", ["a", "s"], ["g"]), pad, resize], {}),
                  conv("c", "rs", 8, 4), head("c", 4))
    i.update(ii)
    a = assert_prunes_exactly(build(n, i, opset=opset))
    assert {g.id for g in a.prunable_groups} == {"a", "c"}


@pytest.mark.parametrize("dims", [1, 3])
def test_conv_1d_3d_instance_norm_prelu_gelu(dims):
    k = [3] * dims
    shape = ("N", 3) + (6,) * dims
    i = {"a.w": W(8, 3, *k), "a.b": W(8), "in.s": W(8), "in.b": W(8),
         "slope": W(8, *([1] * dims)), "b.w": W(6, 8, *k), "fc.w": W(5, 6), "fc.b": W(5)}
    nodes = [
        helper.make_node("Conv", ["x", "a.w", "a.b"], ["a"], pads=[1] * (2 * dims)),
        helper.make_node("InstanceNormalization", ["a", "in.s", "in.b"], ["n"]),
        helper.make_node("PRelu", ["n", "slope"], ["p"]),
        helper.make_node("Gelu", ["p"], ["ge"]),
        helper.make_node("Dropout", ["ge"], ["d"]),
        helper.make_node("Cast", ["d"], ["c"], to=TensorProto.FLOAT),
        helper.make_node("Conv", ["c", "b.w"], ["b"], pads=[1] * (2 * dims)),
        helper.make_node("GlobalMaxPool", ["b"], ["gp"]),
        helper.make_node("Flatten", ["gp"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], transB=1),
    ]
    a = assert_prunes_exactly(build(nodes, i, opset=20, in_shape=shape))
    assert {g.id for g in a.prunable_groups} == {"a", "b"}
