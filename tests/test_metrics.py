"""Accuracy/fidelity metrics on hand-computed examples (onnx_amc.metrics)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from onnx_amc.metrics import (
    Metrics,
    fidelity,
    is_classifier_shaped,
    likelihood,
    search_score,
    topk_accuracy,
)

LOGITS = np.array(
    [
        [0.1, 0.9, 0.0, 0.3, 0.2, 0.05],  # order: 1, 3, 4, 0, 5, 2
        [5.0, 1.0, 2.0, 3.0, 4.0, 0.0],  # order: 0, 4, 3, 2, 1, 5
        [-1.0, 0.0, 1.0, 0.5, 0.2, 0.1],  # order: 2, 3, 4, 5, 1, 0
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],  # order: 5, 4, 3, 2, 1, 0
    ],
    dtype=np.float32,
)
LABELS = np.array([1, 3, 0, 0])


def test_topk_hand_computed() -> None:
    assert topk_accuracy(LOGITS, LABELS, 1) == pytest.approx(0.25)
    assert topk_accuracy(LOGITS, LABELS, 3) == pytest.approx(0.5)
    assert topk_accuracy(LOGITS, LABELS, 5) == pytest.approx(0.5)
    assert topk_accuracy(LOGITS, LABELS, 6) == pytest.approx(1.0)
    # [N, C, 1, 1] heads (1x1 conv classifiers) are accepted.
    assert topk_accuracy(LOGITS[:, :, None, None], LABELS, 3) == pytest.approx(0.5)


def test_topk_non_finite_rows_are_misses_and_errors() -> None:
    logits = LOGITS.copy()
    logits[0, 4] = np.nan
    assert topk_accuracy(logits, LABELS, 1) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        topk_accuracy(LOGITS, LABELS, 7)
    with pytest.raises(ValueError):
        topk_accuracy(LOGITS, LABELS[:3], 1)
    with pytest.raises(ValueError):
        topk_accuracy(np.zeros((4, 6, 2, 2)), LABELS, 1)


def test_classifier_shape_rule() -> None:
    assert is_classifier_shaped(np.zeros((2, 10)))
    assert is_classifier_shaped(np.zeros((2, 10, 1, 1)))
    assert not is_classifier_shaped(np.zeros((2, 1)))
    assert not is_classifier_shaped(np.zeros((2, 84, 8400)))
    assert not is_classifier_shaped(np.zeros(5))


def test_fidelity_identical_is_perfect() -> None:
    out = {"logits": LOGITS, "aux": np.arange(24, dtype=np.float32).reshape(4, 2, 3)}
    fid = fidelity(out, out)
    assert fid["top1_agreement"] == 1.0
    assert fid["top1_output"] == "logits"
    assert fid["mean_cosine"] == pytest.approx(1.0)
    assert fid["mean_rel_l2"] == pytest.approx(0.0)


def test_fidelity_hand_computed() -> None:
    ref = {"y": np.array([[3.0, 4.0], [1.0, 0.0]])}
    out = {"y": np.array([[3.0, 4.0], [0.0, 1.0]])}
    fid = fidelity(out, ref)
    # Sample 0 identical; sample 1 orthogonal: rel l2 = sqrt(2), cosine 0, argmax differs.
    assert fid["outputs"]["y"]["rel_l2"] == pytest.approx(math.sqrt(2) / 2)
    assert fid["outputs"]["y"]["cosine"] == pytest.approx(0.5)
    assert fid["top1_agreement"] == pytest.approx(0.5)


def test_fidelity_non_classifier_zero_and_nan() -> None:
    ref = {"mask": np.zeros((3, 2, 4, 4)), "det": np.ones((3, 5, 7))}
    out = {"mask": np.zeros((3, 2, 4, 4)), "det": -np.ones((3, 5, 7))}
    out["mask"][2, 0, 0, 0] = np.nan
    fid = fidelity(out, ref)
    assert fid["top1_agreement"] is None and fid["top1_output"] is None
    assert fid["outputs"]["det"]["cosine"] == pytest.approx(-1.0)
    assert fid["outputs"]["det"]["rel_l2"] == pytest.approx(2.0)
    # Two zero-vs-zero samples (cosine 1) and one NaN sample (cosine 0, rel l2 inf).
    assert fid["outputs"]["mask"]["cosine"] == pytest.approx(2 / 3)
    assert math.isinf(fid["outputs"]["mask"]["rel_l2"])


def test_fidelity_mismatches_raise() -> None:
    with pytest.raises(ValueError, match="names"):
        fidelity({"a": np.zeros((1, 2))}, {"b": np.zeros((1, 2))})
    with pytest.raises(ValueError, match="shape"):
        fidelity({"a": np.zeros((1, 3))}, {"a": np.zeros((1, 2))})


def test_metrics_score_precedence_and_dict() -> None:
    ref = {"logits": LOGITS}
    labelled = Metrics.compute(ref, ref, LABELS)
    assert labelled.top1 == pytest.approx(0.25) and labelled.top5 == pytest.approx(0.5)
    assert labelled.score == pytest.approx(0.25) and labelled.score_name == "top1"
    assert labelled.num_samples == 4

    unlabelled = Metrics.compute(ref, ref)
    assert unlabelled.top1 is None and unlabelled.score == 1.0
    assert unlabelled.score_name == "top1_agreement"

    seg = {"mask": np.ones((2, 3, 4, 4))}
    seg_m = Metrics.compute({"mask": 2 * np.ones((2, 3, 4, 4))}, seg, np.array([0, 1]))
    assert seg_m.top1 is None and seg_m.score_name == "mean_cosine"
    assert seg_m.score == pytest.approx(1.0)

    few = Metrics.compute({"l": LOGITS[:, :3]}, {"l": LOGITS[:, :3]}, LABELS % 3)
    assert few.top5 is None and few.top1 is not None

    d = labelled.as_dict()
    assert d["score"] == labelled.score and d["fidelity"]["outputs"]["logits"]["cosine"] == 1.0
    json.dumps(d)


def test_search_score_kinds() -> None:
    """What a search maximises: labelled top-1 wins over any blend; without labels
    agreement+cosine is the mean of the two; cosine is cosine either way."""
    ref = {"logits": LOGITS}
    out = {"logits": LOGITS[[0, 1, 3, 2]]}  # two rows swapped: agreement 0.5
    fid = fidelity(out, ref)
    unlabelled = Metrics.compute(out, ref)
    labelled = Metrics.compute(out, ref, labels=LABELS)
    assert fid["top1_agreement"] == pytest.approx(0.5) and fid["mean_cosine"] < 1.0
    assert search_score(unlabelled) == unlabelled.score == pytest.approx(0.5)
    assert search_score(unlabelled, "agreement+cosine") == pytest.approx(
        0.5 * (0.5 + fid["mean_cosine"]))
    assert search_score(unlabelled, "cosine") == pytest.approx(fid["mean_cosine"])
    assert search_score(labelled, "agreement+cosine") == labelled.top1
    assert search_score(labelled, "cosine") == pytest.approx(fid["mean_cosine"])
    # No classifier output: agreement+cosine is cosine, as auto is.
    maps = Metrics.compute({"m": np.ones((2, 3, 4, 4))}, {"m": np.ones((2, 3, 4, 4))})
    assert search_score(maps, "agreement+cosine") == search_score(maps) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="score must be one of"):
        search_score(unlabelled, "top5")


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_likelihood_is_exp_minus_cross_entropy() -> None:
    """exp(mean log p(target)); softmax outputs are taken as they are, not softmaxed twice;
    a non-finite row makes the whole set score 0, as a broken candidate must lose."""
    want = math.exp(np.mean(_log_softmax(LOGITS)[np.arange(4), LABELS]))
    assert likelihood(LOGITS, LABELS) == pytest.approx(want)
    probs = np.exp(_log_softmax(LOGITS))
    assert likelihood(probs, LABELS) == pytest.approx(want)
    assert likelihood(LOGITS[:, :, None, None], LABELS) == pytest.approx(want)
    # Continuous where top-1 is not: a less confident right answer lowers it.
    softer = LOGITS.copy()
    softer[0, 1] = 0.4  # row 0 still predicts its label 1
    assert topk_accuracy(softer, LABELS) == topk_accuracy(LOGITS, LABELS)
    assert likelihood(softer, LABELS) < likelihood(LOGITS, LABELS)
    broken = LOGITS.copy()
    broken[2, 0] = np.nan
    assert likelihood(broken, LABELS) == 0.0
    with pytest.raises(ValueError, match="targets"):
        likelihood(LOGITS, LABELS[:3])


def test_search_score_likelihood() -> None:
    """With labels: the labels' likelihood; without: the likelihood of the original's top-1
    classes (for the original itself that is its own confidence, not 1);
    no classifier output: mean cosine."""
    ref = {"logits": LOGITS}
    out = {"logits": LOGITS[[0, 1, 3, 2]]}
    labelled = Metrics.compute(out, ref, labels=LABELS)
    want = math.exp(np.mean(_log_softmax(LOGITS[[0, 1, 3, 2]])[np.arange(4), LABELS]))
    assert labelled.likelihood == pytest.approx(want)
    assert search_score(labelled, "likelihood") == pytest.approx(want)
    unlabelled = Metrics.compute(out, ref)
    assert unlabelled.likelihood is None
    ref_top1 = LOGITS.argmax(axis=1)
    want_u = math.exp(np.mean(_log_softmax(LOGITS[[0, 1, 3, 2]])[np.arange(4), ref_top1]))
    assert unlabelled.fidelity["top1_likelihood"] == pytest.approx(want_u)
    assert search_score(unlabelled, "likelihood") == pytest.approx(want_u)
    maps = Metrics.compute({"m": np.ones((2, 3, 4, 4))}, {"m": np.ones((2, 3, 4, 4))})
    assert maps.fidelity["top1_likelihood"] is None
    assert search_score(maps, "likelihood") == pytest.approx(1.0)
    json.dumps(labelled.as_dict())
