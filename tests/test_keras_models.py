"""The committed Keras -> tf2onnx fixtures are valid ONNX and still compute what Keras did.

The models and their ``.npz`` (input + Keras output) are made in a scratch TensorFlow
venv by ``scripts/make_keras_models.py``; see ``tests/data/keras/README.md``.  This test
needs only onnx, onnxruntime and numpy.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest

DATA = pathlib.Path(__file__).parent / "data" / "keras"
NAMES = ("keras_cnn", "keras_resnet", "keras_mobilenet", "keras_mlp")
OPSETS = (13, 17)
CASES = [f"{name}_op{opset}" for name in NAMES for opset in OPSETS]


def _load(stem: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    model = onnx.load(DATA / f"{stem}.onnx")
    with np.load(DATA / f"{stem}.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return model, arrays


def test_all_fixtures_present():
    missing = [f"{c}{ext}" for c in CASES for ext in (".onnx", ".npz")
               if not (DATA / f"{c}{ext}").is_file()]
    assert not missing, f"missing in {DATA}: {missing}"
    total = sum(p.stat().st_size for p in DATA.iterdir() if p.is_file())
    assert total < 3 * 1024 * 1024


@pytest.mark.parametrize("stem", CASES)
def test_checker_full(stem):
    model, _ = _load(stem)
    onnx.checker.check_model(model, full_check=True)
    opset = {o.domain: o.version for o in model.opset_import}[""]
    assert stem.endswith(f"_op{opset}")
    # exported with a dynamic batch dimension
    for vi in list(model.graph.input) + list(model.graph.output):
        batch = vi.type.tensor_type.shape.dim[0]
        assert not batch.HasField("dim_value"), f"{vi.name}: static batch dim"


@pytest.mark.parametrize("stem", CASES)
def test_onnxruntime_matches_keras(stem):
    model, arrays = _load(stem)
    expected = arrays.pop("expected")
    input_names = [i.name for i in model.graph.input]
    assert sorted(arrays) == sorted(input_names)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, arrays)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
