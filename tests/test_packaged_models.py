"""Smoke tests over the real pretrained ONNX models shipped inside PyPI wheels.

Each model is skipped (with the pip line in the reason) when its package is not
installed.  Set ONNX_AMC_REQUIRE_PACKAGED=1 (CI does, once the ``models`` extra
is installed) to turn "none of them is installed" into a failure.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.packaged import PACKAGED, PackagedModel, available, locate, skip_reason

_REQUIRE = os.environ.get("ONNX_AMC_REQUIRE_PACKAGED", "") == "1"


def _path_or_skip(model: PackagedModel):
    path = locate(model)
    if path is None:
        pytest.skip(skip_reason(model))
    return path


def _graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    # IR<4 style files (centerface) also list every initializer in graph.input.
    inits = {t.name for t in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in inits]


def test_require_packaged_models():
    found = available()
    if not _REQUIRE:
        pytest.skip(
            f"{len(found)}/{len(PACKAGED)} packaged models installed; "
            "set ONNX_AMC_REQUIRE_PACKAGED=1 to require them"
        )
    assert found, (
        "ONNX_AMC_REQUIRE_PACKAGED=1 but no packaged model is installed; "
        "install the `models` extra (see docs/packaged-models.md)"
    )


@pytest.mark.parametrize("model", PACKAGED, ids=lambda m: m.name)
def test_declared_shapes_match_graph(model: PackagedModel):
    path = _path_or_skip(model)
    proto = onnx.load(str(path), load_external_data=False)
    inputs = _graph_inputs(proto)
    assert {i.name for i in inputs} == set(model.input_shapes)
    for inp in inputs:
        shape = model.input_shapes[inp.name]
        dims = inp.type.tensor_type.shape.dim
        assert len(dims) == len(shape), inp.name
        for d, want in zip(dims, shape, strict=True):
            # dim_value <= 0 is how old paddle2onnx exports spell "dynamic".
            if d.HasField("dim_value") and d.dim_value > 0:
                assert d.dim_value == want, (inp.name, shape)


@pytest.mark.parametrize("model", PACKAGED, ids=lambda m: m.name)
def test_checker_full(model: PackagedModel):
    path = _path_or_skip(model)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


@pytest.mark.parametrize("model", PACKAGED, ids=lambda m: m.name)
def test_runs_in_onnxruntime(model: PackagedModel):
    path = _path_or_skip(model)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # centerface warns about initializers in graph.input
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for inp in sess.get_inputs():
        assert inp.type == "tensor(float)", (inp.name, inp.type)
        feeds[inp.name] = rng.random(model.input_shapes[inp.name], dtype=np.float32)
    outs = sess.run(None, feeds)
    assert outs
    for out in outs:
        assert out.size > 0
        assert np.isfinite(out).all()
