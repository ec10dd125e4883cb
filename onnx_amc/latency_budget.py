"""Latency for the search: what the action wall predicts, and what each candidate is scored with.

A latency budget needs two things that differ in cost and honesty:

* the **wall** clips every action so the episode stays within budget, so it calls its cost
  function many times per episode: only a prediction is fast enough (a per-op profile of this
  model, measured on the target; or, with no measurement at all, a FLOPs/memory estimate);
* the **score** of a finished candidate: measured live where the target can run it (this host,
  or a device over SSH), predicted from the profile otherwise.

:func:`latency_source` resolves ``--target`` into both and says which numbers are measured,
predicted or estimated, so reports never mix them up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InputError

__all__ = ["LatencySource", "latency_source"]

logger = logging.getLogger(__name__)

CostFn = Callable[[Mapping[str, float]], float]


@dataclass(frozen=True)
class LatencySource:
    """How latency enters one search.

    ``wall_cost`` is the budget's cost (ms, or relative units for an estimate); ``measure`` is
    where candidates are timed live (``"host"``, an ``ssh://`` URL) or None when ``predict_ms``
    scores them; ``source`` labels candidate latencies: measured, predicted or estimated."""

    target: str
    source: str
    wall_cost: CostFn
    wall_source: str
    measure: str | None
    predict_ms: CostFn | None
    detail: str
    warning: str | None = None


def latency_source(
    target: str,
    analysis: Any,
    space: Any,
    *,
    threads: int = 1,
    providers: Sequence[str] | None = None,
    profile_time_s: float = 120.0,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    progress: bool = False,
    seed: int = 0,
) -> LatencySource:
    """Resolve ``--target`` for a latency budget on ``analysis``/``space``.

    * ``host``: profile this model on this machine first (bounded by ``profile_time_s``) for
      the wall; candidates are measured live.
    * ``ssh://user@host[:port]``: the wall uses a FLOPs/memory estimate (a profile measured on
      the device can be passed as the target instead); candidates are measured on the device.
    * ``PROFILE.json`` or a bundled ``NAME``: wall and scores from the profile (predicted).
    * a ``NAME`` without a measured profile: the estimate, loudly labelled.
    """
    from .targets.named import resolve_target
    from .targets.predict import Predictor, estimate_cost_fn

    spec = resolve_target(target)
    if spec.kind == "host":
        from .targets.profile import build_profile

        profile = build_profile(analysis, threads=threads, providers=providers,
                                time_budget_s=profile_time_s, round_to=space.round_to,
                                lbound=space.lbound, input_shapes=input_shapes,
                                progress=progress, seed=seed)
        pred = Predictor.from_profile(profile, analysis)
        return LatencySource("host", "measured", pred.cost_fn(space), "predicted", "host", None,
                             "measured live with ONNX Runtime on this host; the action wall "
                             "uses a per-op profile of this model measured here")
    if spec.kind == "ssh":
        est = estimate_cost_fn(space, analysis)
        return LatencySource(target, "measured", est, "estimated", spec.name, None,
                             f"measured on {spec.name} over SSH; the action wall uses a "
                             "FLOPs/memory estimate (pass a profile measured on the device "
                             "as --target for a predicted wall)",
                             warning="action wall: latency estimated from FLOPs/memory, not "
                                     "measured; final latencies are measured on the device")
    if spec.profile is not None:
        pred = Predictor.from_profile(spec.profile, analysis)
        cost = pred.cost_fn(space)
        return LatencySource(target, "predicted", cost, "predicted", None, cost,
                             f"predicted from the latency profile '{spec.name}' "
                             f"({pred.source})", warning=spec.warning)
    if spec.kind == "estimate":
        est = estimate_cost_fn(space, analysis)
        return LatencySource(target, "estimated", est, "estimated", None, None,
                             f"estimated from FLOPs and memory traffic, not measured: no "
                             f"measured profile for '{spec.name}'",
                             warning=spec.warning or f"no measured latency profile for "
                             f"'{spec.name}': latency is estimated, not measured")
    raise InputError(f"--target {target}: cannot be used for a latency budget")
