"""Tests for the embedded default model and its held-out calibration set.

Why: every other part of onnx-amc (demo, benchmarks, end-to-end tests) relies on these
committed assets being loadable, valid, consistent with each other and with the
provenance JSON that ``scripts/make_default_model.py`` writes.  If someone regenerates
one file but not the others, or hand-edits the accuracy, these tests fail.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

MODEL_NAME = "digits_cnn.onnx"
CALIB_NAME = "digits_calib.npz"
META_NAME = "digits_cnn.json"
MIN_ACCURACY = 0.97
REPO_ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def asset_path(name: str) -> Iterator[Path]:
    """Locate an asset through the installed ``onnx_amc`` package, not the CWD."""
    with as_file(files("onnx_amc") / "assets" / name) as p:
        yield Path(p)


@pytest.fixture(scope="module")
def meta() -> dict[str, Any]:
    with asset_path(META_NAME) as p:
        return json.loads(p.read_text())


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    with asset_path(MODEL_NAME) as p:
        return p.read_bytes()


@pytest.fixture(scope="module")
def calib() -> tuple[np.ndarray, np.ndarray]:
    with asset_path(CALIB_NAME) as p, np.load(p) as z:
        return z["input"], z["labels"]


@pytest.fixture(scope="module")
def session(model_bytes: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])


def test_model_passes_full_checker(model_bytes: bytes) -> None:
    proto = onnx.load_model_from_string(model_bytes)
    onnx.checker.check_model(proto, full_check=True)
    opset = {o.domain: o.version for o in proto.opset_import}
    assert opset.get("", opset.get("ai.onnx")) == 17
    # Eval-mode export must have folded BN into the convs: the pruner expects plain Conv.
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}


def test_io_names_and_dynamic_batch(session: ort.InferenceSession) -> None:
    (inp,) = session.get_inputs()
    (out,) = session.get_outputs()
    assert inp.name == "input"
    assert out.name == "logits"
    assert inp.shape[1:] == [1, 32, 32]
    assert isinstance(inp.shape[0], str)  # symbolic batch axis
    for n in (1, 5):
        y = session.run(["logits"], {"input": np.zeros((n, 1, 32, 32), np.float32)})[0]
        assert y.shape == (n, 10)


def test_calibration_file_format(
    calib: tuple[np.ndarray, np.ndarray], meta: dict[str, Any]
) -> None:
    x, y = calib
    assert x.dtype == np.float32 and x.ndim == 4 and x.shape[1:] == (1, 32, 32)
    assert y.dtype == np.int64 and y.shape == (x.shape[0],)
    assert x.shape[0] == meta["split"]["calib"]
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert set(np.unique(y).tolist()) == set(range(10))
    with asset_path(CALIB_NAME) as p:
        assert p.stat().st_size < 1_500_000


def test_accuracy_matches_metadata(
    session: ort.InferenceSession, calib: tuple[np.ndarray, np.ndarray], meta: dict[str, Any]
) -> None:
    x, y = calib
    logits = session.run(["logits"], {"input": x})[0]
    correct = int((logits.argmax(axis=1) == y).sum())
    accuracy = correct / len(y)
    assert correct == meta["calib_correct"]
    assert accuracy == meta["calib_top1_accuracy"]
    assert accuracy >= MIN_ACCURACY


def test_metadata_describes_committed_files(meta: dict[str, Any]) -> None:
    assert meta["command"] == "python scripts/make_default_model.py"
    for name, info in meta["files"].items():
        with asset_path(name) as p:
            data = p.read_bytes()
        assert len(data) == info["bytes"], name
        assert hashlib.sha256(data).hexdigest() == info["sha256"], name


def test_calibration_set_is_the_held_out_split(
    calib: tuple[np.ndarray, np.ndarray], meta: dict[str, Any]
) -> None:
    """The npz must be exactly the split the script held out from training.

    Re-deriving it from sklearn's digits with the recorded seed proves no training
    sample leaked into the set the compressor evaluates on.
    """
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    script = REPO_ROOT / "scripts" / "make_default_model.py"
    if not script.exists():
        pytest.skip("generator script not available (installed package without repo)")
    spec = importlib.util.spec_from_file_location("make_default_model", script)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    split = mod.load_split(meta["seed"])
    x, y = calib
    assert len(split.y_train) == meta["split"]["train"]
    np.testing.assert_array_equal(split.x_calib, x)
    np.testing.assert_array_equal(split.y_calib, y)
    # And no calibration image appears among the training images (load_digits has no
    # duplicate images, so any overlap would be a leak).
    train_keys = {row.tobytes() for row in split.x_train}
    assert not any(row.tobytes() in train_keys for row in x)
