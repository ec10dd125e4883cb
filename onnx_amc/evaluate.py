"""Scoring candidate models against the original on calibration data.

The search evaluates hundreds of candidates, so :class:`Evaluator` runs the original
model once, caches its outputs, and then for each candidate only builds one session
from bytes and runs the calibration inputs through it.  Metrics are accuracy (when the
calibration set has labels) and fidelity to the cached reference outputs (always), see
:mod:`onnx_amc.metrics`.

Batching: inputs whose leading dimension is dynamic are run ``batch_size`` samples at
a time; by default the size is measured on the reference pass (see :func:`_trial_plan`).
Models exported with a fixed leading dimension ``B`` are run in chunks of ``B`` (``B == 1``:
sample by sample), the last chunk padded by repeating its final
sample and the padded outputs dropped.  Outputs carry the sample axis first, or on exactly one
other axis of the batch's size (sequence-first heads), which is then moved to the front.

The RL environment depends only on the :class:`CandidateEvaluator` protocol, so tests
can hand it a fake.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import onnx
import onnxruntime as ort

from onnx_amc.data import CalibrationSet, check_label_range
from onnx_amc.errors import InputError
from onnx_amc.latency import make_session
from onnx_amc.metrics import Metrics, first_classifier_output

__all__ = ["CandidateEvaluator", "Evaluator"]

logger = logging.getLogger(__name__)

Model = bytes | onnx.ModelProto


@runtime_checkable
class CandidateEvaluator(Protocol):
    """Anything that scores a candidate model; what the RL environment needs."""

    def evaluate(self, candidate: bytes | onnx.ModelProto) -> Metrics:
        """Quality metrics of ``candidate`` (``Metrics.score`` is the search's accuracy)."""
        ...


def _to_bytes(model: Model) -> bytes:
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString()
    if isinstance(model, bytes | bytearray | memoryview):
        return bytes(model)
    raise TypeError(f"expected ONNX bytes or ModelProto, got {type(model).__name__}")


def _fixed_batch(session: ort.InferenceSession) -> int | None:
    """The static leading dimension shared by all inputs, or ``None`` if dynamic."""
    fixed = {
        arg.shape[0]
        for arg in session.get_inputs()
        if arg.shape and isinstance(arg.shape[0], int) and arg.shape[0] > 0
    }
    if len(fixed) > 1:
        raise InputError(f"model inputs have different fixed batch sizes {sorted(fixed)}")
    return fixed.pop() if fixed else None


class Evaluator:
    """Scores candidates by accuracy and fidelity against the original model.

    Args:
        original: the uncompressed model (bytes or ModelProto).
        calib: the evaluation part of the calibration data.
        threads: intra-op threads of the evaluation sessions (accuracy only; latency is
            measured separately by :mod:`onnx_amc.latency`).
        batch_size: samples per ``session.run`` for models with a dynamic batch axis;
            ``None`` times a few sizes on the original's reference pass and keeps the fastest.
            Why measured: the best size depends on the model, not on one rule.  Memory-bound
            models on large inputs (MobileNetV2 at 224x224: depthwise layers whose batch of
            activations stops fitting in cache) run fastest in small batches, compute-bound
            ones (ResNets on small inputs) in large ones; ``benchmarks/bench_candidate_cost.py``
            compares the measured size with batch 32.  ONNX Runtime's CPU kernels compute
            each sample on its own, so the size changes speed, not scores
            (``tests/test_evaluate.py`` checks outputs bit for bit).
        providers: onnxruntime execution providers.

    Raises:
        InputError: the original model cannot be loaded or fails on ``calib``, the
            calibration inputs do not match the model's inputs, or the labels are not
            class indices of the model's classifier output.
    """

    def __init__(
        self,
        original: Model,
        calib: CalibrationSet,
        *,
        threads: int = 1,
        batch_size: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(calib) == 0:
            raise InputError(f"calibration set '{calib.source}' is empty")
        self.calib = calib
        self.threads = threads
        self.batch_size: int = batch_size or _DEFAULT_BATCH
        self._tune = batch_size is None
        self.providers = tuple(providers)
        t0 = time.perf_counter()
        try:
            session = make_session(_to_bytes(original), threads, self.providers)
        except Exception as exc:  # ORT raises Fail/InvalidGraph/InvalidProtobuf/...
            raise InputError(f"onnxruntime cannot load the model: {exc}") from exc
        names = [arg.name for arg in session.get_inputs()]
        if sorted(names) != sorted(calib.inputs):
            raise InputError(
                f"calibration data '{calib.source}' has inputs {sorted(calib.inputs)} but the "
                f"model expects {names}"
            )
        self.output_names: tuple[str, ...] = tuple(o.name for o in session.get_outputs())
        try:
            self._reference = self._run_session(session, tune=self._tune)
        except Exception as exc:  # ORT raises several unrelated types for bad feeds
            raise InputError(
                f"the original model fails on calibration data '{calib.source}': {exc}"
            ) from exc
        for arr in self._reference.values():
            arr.setflags(write=False)
        label_output = first_classifier_output(self._reference)
        if label_output is not None:  # the load-time check may not have known the classes
            check_label_range(calib.source, calib.labels, calib.class_names, label_output,
                              int(self._reference[label_output].shape[1]))
        self.reference_metrics = Metrics.compute(self._reference, self._reference, calib.labels)
        logger.info(
            "reference outputs for %d samples computed in %.2fs (original %s = %.4f)",
            len(calib),
            time.perf_counter() - t0,
            self.reference_metrics.score_name,
            self.reference_metrics.score,
        )

    @property
    def reference_outputs(self) -> dict[str, np.ndarray]:
        """The original model's outputs on the calibration inputs (read-only arrays)."""
        return dict(self._reference)

    def run(self, model: Model) -> dict[str, np.ndarray]:
        """Outputs of ``model`` on all calibration inputs, keyed like the original's.

        Outputs are matched to the original's by name when the names agree, otherwise
        by position (graph rewrites may rename outputs but keep their order).

        Raises:
            ValueError: the model's outputs cannot be matched to the original's.
        """
        session = make_session(_to_bytes(model), self.threads, self.providers)
        outputs = self._run_session(session)
        names = list(outputs)
        if set(names) == set(self.output_names):
            return {name: outputs[name] for name in self.output_names}
        if len(names) == len(self.output_names):
            return dict(zip(self.output_names, outputs.values(), strict=True))
        raise ValueError(
            f"candidate has outputs {names}, the original has {list(self.output_names)}"
        )

    def evaluate(self, candidate: Model) -> Metrics:
        """Accuracy (if labels) and fidelity of ``candidate`` vs. the cached reference."""
        t0 = time.perf_counter()
        outputs = self.run(candidate)
        metrics = Metrics.compute(outputs, self._reference, self.calib.labels)
        logger.debug(
            "evaluated candidate in %.3fs: %s=%.4f",
            time.perf_counter() - t0,
            metrics.score_name,
            metrics.score,
        )
        return metrics

    def _run_session(self, session: ort.InferenceSession, *, tune: bool = False
                     ) -> dict[str, np.ndarray]:
        """Outputs on all calibration samples. With ``tune`` (the reference pass, dynamic batch
        axis), the first chunks follow :func:`_trial_plan` and ``self.batch_size`` becomes the
        size that ran fastest per sample."""
        n = len(self.calib)
        fixed = _fixed_batch(session)
        trials = _trial_plan(n) if tune and fixed is None else []
        spent: dict[int, float] = {}
        done: dict[int, int] = {}
        out_names = [o.name for o in session.get_outputs()]
        chunks: dict[str, list[np.ndarray]] = {name: [] for name in out_names}
        start = 0
        for i, size in enumerate(itertools.chain(trials, itertools.repeat(None))):
            if start >= n:
                break
            if size is None and i == len(trials) and spent:
                self.batch_size = min(spent, key=lambda b: spent[b] / done[b])
            step = fixed if fixed is not None else (size or self.batch_size)
            t0 = time.perf_counter()
            real = self._run_chunk(session, out_names, start, step, fixed, chunks)
            if size is not None and i > 0:  # the first chunk is a warm-up (allocations)
                spent[size] = spent.get(size, 0.0) + time.perf_counter() - t0
                done[size] = done.get(size, 0) + real
            start += real
        return {name: np.concatenate(parts, axis=0) for name, parts in chunks.items()}

    def _run_chunk(self, session: ort.InferenceSession, out_names: list[str], start: int,
                   step: int, fixed: int | None, chunks: dict[str, list[np.ndarray]]) -> int:
        """Run samples ``start:start+step`` and append their outputs; returns how many."""
        n = len(self.calib)
        stop = min(start + step, n)
        real = stop - start
        feeds = {}
        for name, arr in self.calib.inputs.items():
            part = arr[start:stop]
            if fixed is not None and real < fixed:
                pad = np.repeat(part[-1:], fixed - real, axis=0)
                part = np.concatenate([part, pad], axis=0)
            feeds[name] = part
        results = session.run(out_names, feeds)
        ran = fixed if fixed is not None else real
        for name, res in zip(out_names, results, strict=True):
            res = np.asarray(res)
            if res.ndim > 1 and res.shape[0] != ran:
                # Sequence-first outputs (a CRNN's [T, N, C]): move the one axis that
                # holds the batch to the front.
                axes = [ax for ax, d in enumerate(res.shape) if d == ran]
                if len(axes) == 1:
                    res = np.moveaxis(res, axes[0], 0)
            if res.ndim == 0 or res.shape[0] != ran:
                raise ValueError(
                    f"model output '{name}' has shape {list(res.shape)} for a batch of "
                    f"{ran}; outputs must have the sample axis first"
                )
            chunks[name].append(res[:real])
        return real


_DEFAULT_BATCH = 32
_TRIAL_SIZES = (2, 4, 8, 16, 32)


def _trial_plan(n: int) -> list[int]:
    """Chunk sizes for the reference pass to time: a warm-up chunk, then each size over the
    same number of samples, ascending and then descending, so that a drift in the machine's
    speed during the trials (common on shared VMs) favours no size. Empty when the set is too
    small for it to matter (under 96 samples: one or two chunks)."""
    if n < 96:
        return []
    per = 32 if n >= 512 else 16 if n >= 256 else 8
    sizes = [s for s in _TRIAL_SIZES if s <= per]
    half = [s for s in sizes for _ in range(per // s)]
    plan = [sizes[0], *half, *[s for s in reversed(sizes) for _ in range(per // s)]]
    return plan if sum(plan) <= n else []
