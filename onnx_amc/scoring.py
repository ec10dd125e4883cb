"""Scoring one candidate policy: prune, optionally reconstruct, evaluate, optionally time.

Everything a candidate's score depends on is in :class:`ScoringSpec`, a plain picklable value
(model bytes, calibration arrays, settings).  That is what lets the same scorer run in this
process or be rebuilt once per worker process (``--workers``): a worker receives the spec once
and then only policies, and builds the identical analysis and layer space from the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from graph_ops import analyze, apply

if TYPE_CHECKING:
    from graph_ops import Analysis
    from graph_ops.plan import PrunePlan

    from .data import CalibrationSet
    from .search.env import EvalResult
    from .search.space import LayerSpace

__all__ = ["ScoringSpec", "CandidateScorer"]


@dataclass(frozen=True)
class ScoringSpec:
    """What a candidate's score depends on.  ``fit_inputs`` is the reconstruction subset;
    ``search_data`` the part whose metric is the search's reward; ``latency`` says whether each
    candidate's latency is measured here (host live measurement)."""

    model: bytes
    search_data: CalibrationSet
    fit_inputs: Mapping[str, np.ndarray] | None = None
    input_shapes: Mapping[str, tuple[int, ...]] | None = None
    round_to: int = 8
    lbound: float = 0.2  # the search space's lowest keep ratio (policies map to counts by it)
    reconstruct: bool = False
    threads: int = 1
    seed: int = 0
    latency: bool = False
    providers: tuple[str, ...] | None = None
    latency_target: str | None = None  # where candidates are timed: "host" or an ssh:// URL
    score: str = "auto"  # what the search maximises: a name in metrics.SEARCH_SCORES


class CandidateScorer:
    """``scorer(policy) -> EvalResult`` for rounded policies ``{group id: keep ratio}``.

    Build with an existing ``analysis``/``space`` in the driver (no second analysis), or from
    the spec alone in a worker.
    """

    def __init__(self, spec: ScoringSpec, *, analysis: Analysis | None = None,
                 space: LayerSpace | None = None) -> None:
        from .evaluate import Evaluator
        from .search.space import build_space

        self.spec = spec
        self.analysis = analysis if analysis is not None else analyze(
            spec.model, input_shapes=spec.input_shapes)
        self.space = space if space is not None else build_space(
            self.analysis, round_to=spec.round_to, lbound=spec.lbound)
        self.evaluator = Evaluator(self.analysis.model, spec.search_data, threads=spec.threads)
        self._timer: Callable[[onnx.ModelProto], float] | None = None
        if spec.latency:
            self._timer = self.make_timer()

    def make_timer(self) -> Callable[[onnx.ModelProto], float]:
        target = self.spec.latency_target or "host"
        providers = list(self.spec.providers) if self.spec.providers else None
        if target.startswith("ssh://"):
            from .targets.ssh import SshTarget

            remote = SshTarget.parse(target)
            return lambda model: self._time_remote(remote, [model])[0]
        from .latency import relative_timer

        relative = relative_timer(self.analysis.model, self.spec.search_data.first_sample(),
                                  threads=self.spec.threads, providers=providers)

        def timer(model: onnx.ModelProto) -> float:
            return relative(None if model is self.analysis.model else model)

        return timer

    def _time_remote(self, remote: Any, models: Sequence[onnx.ModelProto]) -> list[float]:
        """Device ms of ``models`` in one round trip, at the calibration data's shapes (as
        the host would time them)."""
        shapes = {k: v.shape for k, v in self.spec.search_data.first_sample().items()}
        stats = remote.measure_many(
            [m.SerializeToString() for m in models], threads=self.spec.threads,
            providers=list(self.spec.providers) if self.spec.providers else None,
            input_shapes=shapes)
        return [float(st.median_ms) for st in stats]

    def _candidate_timer(self) -> Callable[[onnx.ModelProto], float]:
        """The timer every candidate is timed with, made once (it holds the original's
        session and timing unit)."""
        if self._timer is None:
            self._timer = self.make_timer()
        return self._timer

    def time_original(self) -> float:
        """Latency of the unpruned model, measured like every candidate (ms)."""
        return self._candidate_timer()(self.analysis.model)

    def time_policies(self, policies: Sequence[Mapping[str, float]]) -> list[float]:
        """Latency (ms, in :meth:`time_original`'s unit) of each policy's pruned model, timed
        like every candidate; on an ssh target in one round trip.  Without reconstruction:
        refitted weights change no shape, so they cannot change the time, and the fit costs
        seconds."""
        models = [apply(self.analysis, self.space.plan(self.space.ratios_of(p)))
                  for p in policies]
        target = self.spec.latency_target or "host"
        if target.startswith("ssh://"):
            from .targets.ssh import SshTarget

            return self._time_remote(SshTarget.parse(target), models)
        timer = self._candidate_timer()
        return [timer(m) for m in models]

    def build(self, policy: Mapping[str, float]) -> tuple[onnx.ModelProto, PrunePlan, Any]:
        """The pruned (and, if asked, reconstructed) model of ``policy``, its plan, and the
        reconstruction report (None without reconstruction)."""
        plan = self.space.plan(self.space.ratios_of(policy))
        model = apply(self.analysis, plan)
        report = None
        if self.spec.reconstruct:
            from .reconstruct import reconstruct as fit_weights

            model, report = fit_weights(self.analysis.model, model, self.analysis, plan,
                                        self.spec.fit_inputs, threads=self.spec.threads,
                                        seed=self.spec.seed)
        return model, plan, report

    def candidate(self, policy: Mapping[str, float]) -> onnx.ModelProto:
        """The pruned (and, if asked, reconstructed) model of ``policy``."""
        return self.build(policy)[0]

    def __call__(self, policy: Mapping[str, float]) -> EvalResult:
        from .metrics import search_score
        from .search.env import EvalResult, metrics_extra

        model = self.candidate(policy)
        m = self.evaluator.evaluate(model)
        latency = self._timer(model) if self._timer is not None else None
        return EvalResult(search_score(m, self.spec.score), latency, metrics_extra(m))
