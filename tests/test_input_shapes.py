"""Nonsense --input-shape pins and dangling tensors are refused, not analysed into wrong numbers.

Every refusal is a GraphOpsError (one line on stderr, exit 2 from the CLI); every check sits in
graph_ops.checks and runs from graph_ops.analyze, for a path and for a ModelProto alike.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graph_ops import GraphOpsError, analyze, count
from graph_ops.checks import check_defined

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "onnx_amc" / "assets" / "digits_cnn.onnx"  # input 'input': [N, 1, 32, 32]


def _conv_model(dims: list[int | str], *, weights_as_inputs: bool = False) -> onnx.ModelProto:
    """x[dims] -> Conv(4 filters, 3x3, pad 1) -> Relu -> y; optionally an old-style export
    that lists the weight initializer among the graph inputs too."""
    w = numpy_helper.from_array(np.ones((4, dims[1], 3, 3), np.float32), "W")
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)]
    if weights_as_inputs:
        inputs.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, [4, dims[1], 3, 3]))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"], name="relu")],
        "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _conv_macs(c_in: int, h: int, w: int) -> int:
    return 4 * c_in * 9 * h * w  # batch 1 by convention


def _refused(model, shapes) -> str:
    with pytest.raises(GraphOpsError) as info:
        analyze(model, input_shapes=shapes)
    return str(info.value)


def _run(*args: str) -> subprocess.CompletedProcess:
    from tests.cli_runner import invoke  # in this process: every case ends before any work

    return invoke(*args)


def _assert_cli_refuses(proc: subprocess.CompletedProcess, message: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0] == f"onnx-amc: error: {message}"


def test_digits_declares_a_dynamic_batch_and_static_rest():
    dims = onnx.load(str(DIGITS)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 1, 32, 32]


# --- refusals ------------------------------------------------------------------------------

def test_unknown_input_name_is_refused():
    assert _refused(DIGITS, {"nosuchinput": (1, 1, 32, 32)}) == (
        "--input-shape names 'nosuchinput', which is not an input of the model (inputs: input)")


def test_initializer_listed_as_graph_input_is_not_an_input():
    model = _conv_model(["N", 3, "H", "W"], weights_as_inputs=True)
    assert _refused(model, {"W": (4, 3, 3, 3)}) == (
        "--input-shape names 'W', which is not an input of the model (inputs: x)")
    # ... while the real input of the same model is pinned as usual
    c = count(analyze(model, input_shapes={"x": (1, 3, 8, 8)}))
    assert c.macs == _conv_macs(3, 8, 8)


def test_rank_mismatch_is_refused_naming_both_ranks():
    msg = _refused(DIGITS, {"input": (1, 1, 32)})
    assert msg == ("--input-shape gives 'input' rank 3 (1,1,32), but the model's input "
                   "'input' has rank 4 (N,1,32,32)")
    assert "rank 5" in _refused(DIGITS, {"input": (1, 1, 1, 32, 32)})


@pytest.mark.parametrize(("shape", "axis", "given", "fixed"), [
    ((1, 3, 32, 32), 1, 3, 1),   # channels
    ((2, 1, 64, 64), 2, 64, 32),  # dynamic batch 2 is fine, spatial 64 contradicts 32
    ((1, 1, 32, 16), 3, 16, 32),
])
def test_pin_contradicting_a_static_dim_is_refused(shape, axis, given, fixed):
    assert _refused(DIGITS, {"input": shape}) == (
        f"--input-shape gives 'input' size {given} on axis {axis}, but the model fixes "
        f"axis {axis} of 'input' to {fixed} (N,1,32,32)")


def test_static_batch_of_one_is_static_too():
    model = _conv_model([1, 3, 8, 8])
    assert _refused(model, {"x": (2, 3, 8, 8)}) == (
        "--input-shape gives 'x' size 2 on axis 0, but the model fixes axis 0 of 'x' to 1 "
        "(1,3,8,8)")


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_non_positive_or_non_integer_sizes_are_refused(bad):
    msg = _refused(_conv_model(["N", 3, "H", "W"]), {"x": (1, 3, bad, 8)})
    assert msg == (f"--input-shape gives 'x' size {bad!r} on axis 2: sizes must be positive "
                   "integers")


def test_the_check_applies_to_a_model_proto_and_bytes_too():
    model = onnx.load(str(DIGITS))
    for source in (model, model.SerializeToString()):
        assert "not an input" in _refused(source, {"nosuchinput": (1, 1, 32, 32)})
        assert "rank 3" in _refused(source, {"input": (1, 1, 32)})
        assert "axis 1" in _refused(source, {"input": (1, 3, 32, 32)})


# --- accepted pins -------------------------------------------------------------------------

def test_dynamic_dims_take_any_positive_size():
    model = _conv_model(["N", 3, "H", "W"])
    assert count(analyze(model)).macs is None  # H, W unknown without a pin
    for shape in ((1, 3, 8, 8), (1, 3, 16, 24)):
        c = count(analyze(model, input_shapes={"x": shape}))
        assert c.macs == _conv_macs(3, shape[2], shape[3])
    assert count(analyze(model, input_shapes={"x": (2, 3, 8, 8)})).macs is not None


def test_unknown_dims_and_unknown_rank_take_any_pin():
    model = _conv_model(["N", 3, "H", "W"])
    for d in model.graph.input[0].type.tensor_type.shape.dim:
        d.Clear()  # '?' dims: no dim_value, no dim_param
    assert count(analyze(model, input_shapes={"x": (1, 3, 8, 8)})).macs == _conv_macs(3, 8, 8)
    model.graph.input[0].type.tensor_type.ClearField("shape")
    assert count(analyze(model, input_shapes={"x": (1, 3, 8, 8)})).macs == _conv_macs(3, 8, 8)


def test_static_dims_pinned_to_their_own_values_are_accepted():
    unpinned = count(analyze(DIGITS)).macs
    assert unpinned is not None
    assert count(analyze(DIGITS, input_shapes={"input": (1, 1, 32, 32)})).macs == unpinned
    assert count(analyze(DIGITS, input_shapes={"input": (8, 1, 32, 32)})).macs is not None
    model = _conv_model([1, 3, 8, 8])
    assert count(analyze(model, input_shapes={"x": (1, 3, 8, 8)})).macs == _conv_macs(3, 8, 8)


# --- tensors nothing defines ---------------------------------------------------------------

def _dangling_model() -> onnx.ModelProto:
    model = _conv_model(["N", 3, 8, 8])
    model.graph.node.append(helper.make_node("Add", ["y", "ghost"], ["z"], name="add"))
    model.graph.output[0].name = "z"
    return model


def test_node_reading_an_undefined_tensor_is_refused():
    assert _refused(_dangling_model(), None) == (
        "node 'add' reads 'ghost', which no input, initializer or node defines")


def test_unnamed_node_is_labelled_by_op_and_index():
    model = _dangling_model()
    model.graph.node[2].name = ""
    assert _refused(model, None).startswith("node 'Add#2' reads 'ghost'")


def _if_model(branch_reads: str) -> onnx.ModelProto:
    """y = If(cond) { Relu(branch_reads) } else { Relu(x) }: the then-branch reads a tensor of
    the outer scope (valid) or one nothing defines (not)."""
    def branch(name: str) -> onnx.GraphProto:
        reads = branch_reads if name == "then" else "x"
        return helper.make_graph(
            [helper.make_node("Relu", [reads], [f"{name}_out"], name=f"{name}_relu")],
            name, [], [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)])

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"], name="outer_relu"),
         helper.make_node("If", ["cond"], ["y"], name="if", then_branch=branch("then"),
                          else_branch=branch("else"))],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_subgraphs_may_read_outer_scope_but_not_undefined_tensors():
    good = _if_model("a")
    check_defined(good.graph)
    analyze(good)
    assert _refused(_if_model("ghost"), None) == (
        "node 'then_relu' reads 'ghost', which no input, initializer or node defines")


def test_empty_optional_inputs_are_absent_not_undefined():
    maxv = numpy_helper.from_array(np.array(6.0, np.float32), "maxv")
    graph = helper.make_graph(
        [helper.make_node("Clip", ["x", "", "maxv"], ["y"], name="clip")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [maxv])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    check_defined(model.graph)
    analyze(model)


# --- CLI: one line on stderr, exit 2 ---------------------------------------------------------

def test_cli_refuses_unknown_input_name():
    _assert_cli_refuses(
        _run("inspect", str(DIGITS), "--input-shape", "nosuchinput=1,1,32,32"),
        "--input-shape names 'nosuchinput', which is not an input of the model (inputs: input)")


def test_cli_refuses_rank_mismatch():
    _assert_cli_refuses(
        _run("inspect", str(DIGITS), "--input-shape", "input=1,1,32"),
        "--input-shape gives 'input' rank 3 (1,1,32), but the model's input 'input' has "
        "rank 4 (N,1,32,32)")


def test_cli_refuses_static_dim_contradiction():
    _assert_cli_refuses(
        _run("inspect", str(DIGITS), "--input-shape", "input=1,3,32,32"),
        "--input-shape gives 'input' size 3 on axis 1, but the model fixes axis 1 of 'input' "
        "to 1 (N,1,32,32)")


def test_cli_inspect_and_prune_refuse_an_undefined_tensor(tmp_path):
    path = tmp_path / "dangling.onnx"
    onnx.save(_dangling_model(), str(path))
    msg = "node 'add' reads 'ghost', which no input, initializer or node defines"
    _assert_cli_refuses(_run("inspect", str(path)), msg)
    out = tmp_path / "out.onnx"
    _assert_cli_refuses(_run("prune", str(path), "-o", str(out), "--keep", "0.5"), msg)
    assert not out.exists()


def test_cli_accepts_a_pin_of_a_dynamic_batch():
    proc = _run("inspect", str(DIGITS), "--input-shape", "input=4,1,32,32")
    assert proc.returncode == 0, proc.stderr
    assert "unknown" not in proc.stdout.splitlines()[0]
