"""Evaluator: reference caching, batching, fidelity of candidates (onnx_amc.evaluate)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from onnx_amc.data import (
    CalibrationSet,
    input_specs_from_model,
    load_calibration,
    split_calibration,
)
from onnx_amc.errors import InputError
from onnx_amc.evaluate import CandidateEvaluator, Evaluator
from onnx_amc.latency import make_session
from onnx_amc.metrics import Metrics
from tests.test_data import make_classifier


def _calib(n: int = 10, labels: bool = True) -> CalibrationSet:
    x = np.random.default_rng(0).standard_normal((n, 3, 8, 8)).astype(np.float32)
    return CalibrationSet(
        inputs={"x": x}, labels=(np.arange(n) % 5) if labels else None, source="mem"
    )


def _direct_logits(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = make_session(model.SerializeToString())
    return np.concatenate([session.run(None, {"x": x[i : i + 1]})[0] for i in range(len(x))])


def test_original_vs_itself_is_perfect() -> None:
    model = make_classifier()
    calib = _calib()
    ev = Evaluator(model.SerializeToString(), calib, batch_size=4)
    m = ev.evaluate(model)
    assert m.fidelity["top1_agreement"] == 1.0
    assert m.fidelity["mean_cosine"] == pytest.approx(1.0)
    assert m.fidelity["mean_rel_l2"] == pytest.approx(0.0, abs=1e-6)
    expected = np.mean(np.argmax(_direct_logits(model, calib.inputs["x"]), 1) == calib.labels)
    assert m.top1 == pytest.approx(expected)
    assert m.top5 == 1.0  # 5 classes
    assert m.num_samples == 10
    assert ev.reference_metrics.top1 == m.top1


@pytest.mark.parametrize("batch", [1, 4])
def test_fixed_batch_models(batch: int) -> None:
    dynamic = make_classifier(batch="N")
    fixed = make_classifier(batch=batch)
    calib = _calib(10)  # 10 is not a multiple of 4: last chunk is padded
    ev_fixed = Evaluator(fixed, calib)
    ev_dyn = Evaluator(dynamic, calib, batch_size=3)
    np.testing.assert_allclose(
        ev_fixed.reference_outputs["logits"], ev_dyn.reference_outputs["logits"], rtol=1e-5
    )
    np.testing.assert_allclose(
        ev_fixed.reference_outputs["logits"],
        _direct_logits(dynamic, calib.inputs["x"]),
        rtol=1e-5,
    )
    assert ev_fixed.reference_outputs["logits"].shape == (10, 5)


def test_perturbed_candidate_scores_lower_and_renamed_output() -> None:
    model = make_classifier(seed=0)
    other = make_classifier(seed=1)  # different weights, same interface
    other.graph.output[0].name = "renamed"
    other.graph.node[-1].output[0] = "renamed"
    ev = Evaluator(model, _calib(40, labels=False))
    m = ev.evaluate(other.SerializeToString())
    assert m.top1 is None
    assert m.fidelity["mean_cosine"] < 0.999
    assert m.score == m.fidelity["top1_agreement"] < 1.0
    assert list(ev.run(other)) == ["logits"]


def test_input_errors() -> None:
    model = make_classifier()
    wrong_name = CalibrationSet(
        inputs={"image": np.zeros((2, 3, 8, 8), np.float32)}, labels=None, source="c.npz"
    )
    with pytest.raises(InputError, match=r"c\.npz.*\['image'\].*\['x'\]"):
        Evaluator(model, wrong_name)
    wrong_shape = CalibrationSet(
        inputs={"x": np.zeros((2, 4, 8, 8), np.float32)}, labels=None, source="d.npz"
    )
    with pytest.raises(InputError, match="original model fails.*d.npz"):
        Evaluator(model, wrong_shape)
    with pytest.raises(InputError, match="cannot load"):
        Evaluator(b"not an onnx model", _calib())


def test_protocol_accepts_fakes() -> None:
    class Fake:
        def evaluate(self, candidate: bytes | onnx.ModelProto) -> Metrics:
            return Metrics(top1=0.5, top5=None, fidelity={})

    assert isinstance(Fake(), CandidateEvaluator)
    fake: CandidateEvaluator = Fake()
    assert fake.evaluate(b"").score == 0.5
    assert isinstance(Evaluator(make_classifier(), _calib(2)), CandidateEvaluator)


def test_pipeline_from_npz(tmp_path: Path) -> None:
    model = make_classifier(batch=1)
    f = tmp_path / "calib.npz"
    np.savez(f, x=_calib(12).inputs["x"].astype(np.float64), labels=np.arange(12) % 3)
    calib = load_calibration(f, input_specs_from_model(model), size=10)
    recon, ev_set = split_calibration(calib, 0.5)
    assert len(recon) + len(ev_set) == 10
    ev = Evaluator(model, ev_set)
    m = ev.evaluate(model)
    assert m.num_samples == len(ev_set) and m.fidelity["top1_agreement"] == 1.0


def test_sequence_first_outputs_are_scored_on_their_batch_axis():
    """A CRNN's [T, N, C] head (captcha_crnn ships one): the batch axis moves to the front."""
    from onnx import helper as h

    graph = h.make_graph(
        [h.make_node("Transpose", ["x"], ["y"], perm=[1, 0, 2])], "seq",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 5])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3, "N", 5])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    x = np.random.default_rng(0).standard_normal((8, 3, 5)).astype(np.float32)
    ev = Evaluator(model, CalibrationSet({"x": x}, None, "t"), batch_size=4)
    assert ev.reference_outputs["y"].shape == (8, 3, 5)
    assert ev.evaluate(model).fidelity["mean_cosine"] == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18", "mlp_gemm"])
def test_measured_batch_size_changes_speed_not_outputs(name: str) -> None:
    """The reference pass times a few batch sizes and keeps the fastest; ORT's CPU kernels
    compute each sample on its own, so every size gives the same outputs bit for bit."""
    from onnx_amc.evaluate import _TRIAL_SIZES, _trial_plan
    from tests import zoo

    model = onnx.load(str(zoo.model_path(name, opset=17, bn="folded")))
    shape = zoo.input_shapes(name)["input"]
    x = np.random.default_rng(0).standard_normal((256, *shape[1:])).astype(np.float32)
    calib = CalibrationSet({"input": x}, None, "t")
    tuned = Evaluator(model, calib)
    assert tuned.batch_size in _TRIAL_SIZES and sum(_trial_plan(256)) < 256
    for fixed in (1, 32):
        other = Evaluator(model, calib, batch_size=fixed)
        assert other.batch_size == fixed
        for key, ref in tuned.reference_outputs.items():
            np.testing.assert_array_equal(ref, other.reference_outputs[key])
    assert tuned.evaluate(model).fidelity["mean_rel_l2"] == 0.0


def test_trial_plan_times_every_size_on_equal_samples_both_ways() -> None:
    from onnx_amc.evaluate import _trial_plan

    assert _trial_plan(95) == []
    for n in (96, 256, 1000):
        plan = _trial_plan(n)
        body = plan[1:]  # plan[0] is the untimed warm-up chunk
        assert sum(plan) <= n // 2 + 2
        sizes = sorted(set(body))
        totals = {s: sum(b for b in body if b == s) for s in sizes}
        assert len(set(totals.values())) == 1 and len(sizes) >= 3
        half = len(body) // 2
        assert body[:half] == body[half:][::-1]  # ascending, then descending
