"""Rewards: a registry of pure functions of one evaluated candidate.

``error = 1 - score`` where ``score`` is ``Metrics.score`` (top-1 with labels, else top-1
agreement with the original, else mean cosine).

* ``acc``: ``-error``.  The paper's default with a hard budget: the action wall already
  guarantees the resource, so the reward only has to rank accuracy.  (The official code uses
  ``accuracy x 0.01`` with accuracy in percent, i.e. ``-error`` plus a constant, which the
  moving-average baseline removes anyway.)
* ``acc_log_flops``: ``-error x log(MACs)`` (the paper's R_FLOPs, for accuracy-guaranteed
  compression without a wall; MACs, so ``log`` differs from log FLOPs by ``log 2``).
* ``acc_log_params``: ``-error x log(params)`` (the paper's R_Param).
* ``acc_latency``: ``-error - w x max(0, latency / target - 1)``: the paper's ``-error`` while the
  measured latency is within the target, and a linear penalty of ``w`` (default 1) per 100 %
  of overshoot beyond it.  Measured latency is noisy and a MACs/params wall cannot guarantee
  it, so the overshoot is priced instead of forbidden; with ``w = 1`` a 10 % overshoot costs
  as much as 10 points of accuracy.

Add a reward by adding a function to :data:`REWARDS` (or passing a callable to the env).

Which candidate a search keeps is :func:`rank_key`: the highest reward; among equal rewards the
one whose outputs stay closest to the original's on the same samples (mean cosine); then the one
that uses least of the resource.  Scores are counts of correct calibration samples (a search
part of 64 samples moves in steps of 1.6 points), so equal rewards are common, and candidates
that tie on the count are not equally accurate: the closeness is a continuous measure from the
same outputs and the better bet for the accuracy the budget is spent on.  Preferring the
lighter of tied candidates instead (7234059) returned lighter models that tested worse:
``benchmarks/results/bench_search_macs_400ep_tiebreak_lighter.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["REWARDS", "RewardFn", "RewardInput", "get_reward", "rank_key"]


@dataclass(frozen=True)
class RewardInput:
    """What a reward may look at: quality and resources of one candidate."""

    score: float
    macs: int
    params: int
    latency_ms: float | None = None
    latency_target_ms: float | None = None
    latency_penalty: float = 1.0

    @property
    def error(self) -> float:
        return 1.0 - self.score


RewardFn = Callable[[RewardInput], float]


def acc(x: RewardInput) -> float:
    return -x.error


def acc_log_flops(x: RewardInput) -> float:
    return -x.error * math.log(max(x.macs, 1))


def acc_log_params(x: RewardInput) -> float:
    return -x.error * math.log(max(x.params, 1))


def acc_latency(x: RewardInput) -> float:
    if x.latency_ms is None or x.latency_target_ms is None:
        raise ValueError("reward 'acc_latency' needs a measured latency and a latency target")
    if not x.latency_target_ms > 0:
        raise ValueError(f"latency target must be > 0 ms, got {x.latency_target_ms}")
    overshoot = max(0.0, x.latency_ms / x.latency_target_ms - 1.0)
    return -x.error - x.latency_penalty * overshoot


REWARDS: dict[str, RewardFn] = {
    "acc": acc,
    "acc_log_flops": acc_log_flops,
    "acc_log_params": acc_log_params,
    "acc_latency": acc_latency,
}


def get_reward(name: str | RewardFn) -> RewardFn:
    """A reward by registry name (or a callable, returned as is).

    Raises:
        ValueError: unknown name (lists the known ones).
    """
    if callable(name):
        return name
    try:
        return REWARDS[name]
    except KeyError:
        raise ValueError(f"unknown reward '{name}'; known: {', '.join(sorted(REWARDS))}") from None


def _finite(value: Any, default: float) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else default


def rank_key(record: Mapping[str, Any]) -> tuple[float, float, float]:
    """Sort key of an evaluated candidate, larger is better: reward, then closeness to the
    original's outputs, then less resource.

    The closeness is ``record["extra"]["mean_cosine"]`` (the evaluator's fidelity on the search
    part; records without one tie on it).  The resource is the candidate's latency in ms where
    it has one (measured, or predicted from a profile), else its budget use (MACs or params
    after / before).  ``max(records, key=rank_key)`` keeps the first of full ties.
    """
    extra = record.get("extra")
    close = _finite(extra.get("mean_cosine") if isinstance(extra, Mapping) else None, -2.0)
    use = _finite(record.get("latency_ms"), _finite(record.get("budget_use"), 0.0))
    return float(record["reward"]), close, -use
