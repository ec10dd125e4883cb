"""Tests for the trained "digits zoo" under ``tests/data/digits``.

Why: the pruning/reconstruction benchmarks trust these files to be valid ONNX, to have
the held-out accuracy that ``models.json`` claims (measured on the committed
``onnx_amc/assets/digits_calib.npz``, which none of the models saw in training), and
their ``_bn`` twins to be the same function with real BatchNormalization nodes (BN
re-estimation operates on those).  If a file is regenerated without the JSON, or the
two variants drift apart, these tests fail.  They only run inference, so they are fast.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "tests" / "data" / "digits"
CALIB_PATH = REPO_ROOT / "onnx_amc" / "assets" / "digits_calib.npz"
MODEL_NAMES = ("digits_resnet", "digits_mobilenetv2", "digits_vgg")
MIN_ACCURACY = 0.97
MAX_FILE_BYTES = 1_500_000


@cache
def meta() -> dict[str, Any]:
    return json.loads((DATA_DIR / "models.json").read_text())


@cache
def calib() -> tuple[np.ndarray, np.ndarray]:
    with np.load(CALIB_PATH) as f:
        return f["input"], f["labels"]


@cache
def logits(file_name: str) -> np.ndarray:
    """Logits of one model file over the whole calibration set (cached per file)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(DATA_DIR / file_name), so, providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input": calib()[0]})[0]


def bn_count(path: Path) -> int:
    return sum(n.op_type == "BatchNormalization" for n in onnx.load(str(path)).graph.node)


def test_json_lists_every_model_and_the_calibration_set() -> None:
    assert tuple(meta()["models"]) == MODEL_NAMES
    assert meta()["calib_sha256"] == hashlib.sha256(CALIB_PATH.read_bytes()).hexdigest()
    x, y = calib()
    assert meta()["split"]["calib"] == len(y) == len(x)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("suffix", ["", "_bn"])
def test_file_is_valid_and_matches_json(name: str, suffix: str) -> None:
    path = DATA_DIR / f"{name}{suffix}.onnx"
    data = path.read_bytes()
    info = meta()["models"][name]["files"][path.name]
    assert len(data) == info["bytes"] < MAX_FILE_BYTES
    assert hashlib.sha256(data).hexdigest() == info["sha256"]
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 32, 32]
    assert any(o.domain in ("", "ai.onnx") and o.version == 17 for o in proto.opset_import)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_held_out_accuracy_matches_json(name: str) -> None:
    entry = meta()["models"][name]
    y = calib()[1]
    correct = int((logits(f"{name}.onnx").argmax(axis=1) == y).sum())
    assert correct == entry["calib_correct"]
    assert correct / len(y) == entry["calib_top1_accuracy"]
    assert entry["calib_top1_accuracy"] >= MIN_ACCURACY


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_bn_variant_keeps_bn_and_agrees_with_folded(name: str) -> None:
    assert bn_count(DATA_DIR / f"{name}.onnx") == 0
    assert bn_count(DATA_DIR / f"{name}_bn.onnx") > 0
    np.testing.assert_allclose(
        logits(f"{name}_bn.onnx"), logits(f"{name}.onnx"), rtol=1e-4, atol=1e-4
    )


def test_vgg_head_is_flatten_into_gemm() -> None:
    """The VGG exists to exercise a conv -> Flatten -> Gemm coupling; make sure it is there."""
    graph = onnx.load(str(DATA_DIR / "digits_vgg.onnx")).graph
    producers = {o: n for n in graph.node for o in n.output}
    gemms = [n for n in graph.node if n.op_type == "Gemm"]
    assert len(gemms) == 2
    first = producers[gemms[0].input[0]]
    assert first.op_type in ("Flatten", "Reshape")


def test_upsampled_calibration_matches_what_the_trained_zoo_models_saw() -> None:
    """scripts/train_zoo_on_digits.py trains through a torch Upsample and writes the held-out
    digits upsampled by numpy; if the two differed, the benchmark would score the models on
    inputs they were never trained on."""
    import importlib.util

    import torch

    path = REPO_ROOT / "scripts" / "train_zoo_on_digits.py"
    spec = importlib.util.spec_from_file_location("train_zoo_on_digits", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    x = calib()[0][:5]
    got = mod.upsample(x, 3)
    want = mod.Upsample(3)(torch.from_numpy(x)).numpy()
    assert got.shape == (5, 3, 96, 96) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
