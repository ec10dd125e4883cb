"""A thin Gymnasium adapter: one episode = one keep ratio per prunable group.

The env only connects pure parts: the layer embedding (:mod:`.space`), the action wall
(:mod:`.budget`), an injected policy evaluator and a reward from :mod:`.rewards`.  It holds no
evaluation logic: the evaluator is any ``Callable[[dict[str, float]], EvalResult]``; the standard
one, :func:`plan_evaluator`, prunes with graph_ops and scores with a ``CandidateEvaluator``.

Step ``t`` maps the action ``a`` in ``[-1, 1]`` to a keep ratio in ``[lbound, rbound]``, clips it
with the wall, and records it.  Intermediate rewards are 0; after the last group the env
builds the rounded policy, evaluates it (once per distinct tuple of keep counts: repeated
policies are served from a cache), and returns the final reward.  Giving that reward to every
transition of the episode is the agent's job (:mod:`.agent`), as in the official code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import onnx
from gymnasium import spaces

from graph_ops import apply

from .budget import Budget, check_feasible, clamp_to_budget, fill_budget
from .rewards import RewardFn, RewardInput, get_reward
from .space import LayerSpace

if TYPE_CHECKING:
    from onnx_amc.evaluate import CandidateEvaluator

__all__ = ["BatchEvaluator", "EvalResult", "PolicyEvaluator", "PruningEnv", "finish_batch",
           "plan_evaluator", "sequential"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalResult:
    """Quality of one candidate.  ``score`` is the accuracy in [0, 1] (``Metrics.score``);
    ``extra`` holds JSON-able details for the log (top-1, fidelity, ...)."""

    score: float
    latency_ms: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


#: Evaluates a rounded policy ``{group id: kept / size}``; must depend only on the keep counts.
PolicyEvaluator = Callable[[Mapping[str, float]], EvalResult]


def plan_evaluator(
    space: LayerSpace,
    evaluator: CandidateEvaluator,
    *,
    latency: Callable[[onnx.ModelProto], float] | None = None,
) -> PolicyEvaluator:
    """The standard evaluator: ``make_plan`` -> ``apply`` -> ``evaluator.evaluate`` (a
    :class:`onnx_amc.evaluate.CandidateEvaluator`), plus ``latency(model)`` in ms if given
    (e.g. ``lambda m: onnx_amc.latency.measure(m, inputs).median_ms``)."""

    def evaluate(policy: Mapping[str, float]) -> EvalResult:
        plan = space.plan(space.ratios_of(policy))
        model = apply(space.analysis, plan)
        metrics = evaluator.evaluate(model)
        lat = float(latency(model)) if latency is not None else None
        return EvalResult(float(metrics.score), lat, metrics_extra(metrics))

    return evaluate


def metrics_extra(metrics: Any) -> dict[str, Any]:
    """A candidate's ``EvalResult.extra`` from its :class:`onnx_amc.metrics.Metrics`: top-1/5,
    and the fidelity to the original that :func:`.rewards.rank_key` uses between equal
    rewards (``mean_cosine``)."""
    extra: dict[str, Any] = {"top1": metrics.top1, "top5": metrics.top5}
    fid = metrics.fidelity or {}
    for key in ("top1_agreement", "mean_cosine"):
        if fid.get(key) is not None:
            extra[key] = float(fid[key])
    return extra


class PruningEnv(gym.Env):
    """AMC's channel-pruning environment over a :class:`LayerSpace`.

    Args:
        space: the groups and their embedding.
        budget: the resource target; checked for feasibility here (``ValueError`` otherwise).
        evaluate: scores a rounded policy.
        reward: a name in :data:`~.rewards.REWARDS` or a reward function.
        latency_target_ms: for latency rewards.
        fill: raise each finished episode's ratios until the budget is spent
            (:func:`~.budget.fill_budget`) before it is evaluated; the agent's own ratios are
            kept in the record as ``chosen``.  Off here (the official wall alone);
            :func:`onnx_amc.compress.compress` turns it on by default.

    ``info`` of the last step carries ``"result"``: a JSON-able dict with the policy, ratios,
    keep counts, score, reward, MACs, params, budget use, latency and whether it was cached.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        space: LayerSpace,
        budget: Budget,
        evaluate: PolicyEvaluator,
        *,
        reward: str | RewardFn = "acc",
        latency_target_ms: float | None = None,
        fill: bool = False,
    ) -> None:
        super().__init__()
        check_feasible(budget, space)
        self.space = space
        self.budget = budget
        self.evaluate = evaluate
        self.reward_fn = get_reward(reward)
        self.latency_target_ms = latency_target_ms
        self.fill = fill
        self.observation_space = spaces.Box(0.0, 1.0, (space.num_features,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.cache: dict[tuple[int, ...], dict[str, Any]] = {}
        self.evaluations = 0
        self.cache_hits = 0
        self._chosen: list[float] = []
        self._final: list[float] | None = None  # the episode's ratios after fill, once over

    def to_ratio(self, action: float) -> float:
        """[-1, 1] -> [lbound, rbound], linearly (AMC's actor outputs [0, 1] with a sigmoid)."""
        a = float(np.clip(action, -1.0, 1.0))
        return self.space.lbound + (a + 1.0) / 2.0 * (self.space.rbound - self.space.lbound)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._chosen = []
        self._final = None
        return self.space.observation(0, self._chosen), {}

    def step(self, action):
        info = self.choose(action)
        if not self.episode_over:
            return self.observation(), 0.0, False, False, info
        return self.conclude(info, self.finish())

    def observation(self) -> np.ndarray:
        """The embedding of the next group to decide (of the last one once the episode is over,
        as the terminal observation)."""
        t = min(len(self._chosen), self.space.num_groups - 1)
        return self.space.observation(t, self._chosen)

    # The final step is split in three so that a batch of envs (:func:`finish_batch`, the
    # vectorised env of :mod:`.agent`) can evaluate several finished episodes in one call and
    # still go through the same cache, reward and record code as a lone env.

    @property
    def episode_over(self) -> bool:
        """True once every group has a keep ratio (the episode awaits its evaluation)."""
        return len(self._chosen) >= self.space.num_groups

    def choose(self, action) -> dict[str, Any]:
        """Apply one action (map, clip with the wall, record); the step's ``info``."""
        t = len(self._chosen)
        if t >= self.space.num_groups:
            raise RuntimeError("episode is over: call reset()")
        wanted = self.to_ratio(float(np.asarray(action).reshape(-1)[0]))
        ratio = clamp_to_budget(self.budget, self.space, self._chosen, wanted)
        self._chosen.append(ratio)
        self._final = None
        return {"ratio": ratio, "wanted": wanted}

    def final_ratios(self) -> list[float]:
        """The finished episode's ratios as evaluated: the agent's, filled if ``fill``."""
        if not self.episode_over:
            raise RuntimeError("the episode is not finished")
        if self._final is None:
            self._final = (fill_budget(self.budget, self.space, self._chosen) if self.fill
                           else list(self._chosen))
        return self._final

    def candidate(self) -> tuple[tuple[int, ...], dict[str, float]]:
        """The finished episode's keep counts (the cache key) and rounded policy."""
        ratios = self.final_ratios()
        return self.space.keep_counts(ratios), self.space.policy(ratios)

    def _ratios_info(self) -> dict[str, Any]:
        final = self.final_ratios()
        info: dict[str, Any] = {"ratios": list(final)}
        if final != self._chosen:
            info["chosen"] = list(self._chosen)
        return info

    def finish(self, ev: EvalResult | None = None, seconds: float = 0.0) -> dict[str, Any]:
        """The finished episode's result: from the cache if its keep counts were seen, else
        from ``ev`` (evaluated elsewhere, taking ``seconds``) or by calling ``self.evaluate``."""
        key, policy = self.candidate()
        hit = self.cache.get(key)
        if hit is not None:
            self.cache_hits += 1
            return {**hit, **self._ratios_info(), "cached": True, "eval_seconds": 0.0}
        if ev is None:
            t0 = time.perf_counter()
            ev = self.evaluate(policy)
            seconds = time.perf_counter() - t0
        self.evaluations += 1
        counts = self.space.counts_of(self.final_ratios())
        use = self.budget.cost(policy) / self.budget.original
        reward = self.reward_fn(RewardInput(
            score=ev.score,
            macs=int(counts.macs or 0),
            params=int(counts.params),
            latency_ms=ev.latency_ms,
            latency_target_ms=self.latency_target_ms,
        ))
        result = {
            "policy": policy,
            "keep_counts": list(key),
            "score": float(ev.score),
            "reward": float(reward),
            "macs": int(counts.macs or 0),
            "params": int(counts.params),
            "budget_kind": self.budget.kind,
            "budget_use": float(use),
            "latency_ms": ev.latency_ms,
            "extra": dict(ev.extra),
        }
        self.cache[key] = result
        logger.debug("evaluated %s: score %.4f reward %.4f budget use %.4f",
                     key, ev.score, reward, use)
        return {**result, **self._ratios_info(), "cached": False, "eval_seconds": seconds}

    def conclude(self, info: dict[str, Any], result: dict[str, Any]):
        """The Gymnasium 5-tuple of the final step, given its ``info`` and ``result``."""
        return self.observation(), float(result["reward"]), True, False, {**info, "result": result}

    def clone(self) -> PruningEnv:
        """Another env over the same space, budget, evaluator and reward that shares this one's
        evaluation cache (its own episode state and counters): one of a batch's K copies."""
        other = PruningEnv(self.space, self.budget, self.evaluate, reward=self.reward_fn,
                           latency_target_ms=self.latency_target_ms, fill=self.fill)
        other.cache = self.cache
        return other


#: Evaluates several rounded policies at once (e.g. on a pool of workers), results in order.
BatchEvaluator = Callable[[Sequence[Mapping[str, float]]], Sequence[EvalResult]]


def sequential(evaluate: PolicyEvaluator) -> BatchEvaluator:
    """The reference :data:`BatchEvaluator`: one policy after the other, in this process."""

    def evaluate_many(policies: Sequence[Mapping[str, float]]) -> list[EvalResult]:
        return [evaluate(p) for p in policies]

    return evaluate_many


def finish_batch(envs: Sequence[PruningEnv],
                 evaluate_many: BatchEvaluator | None = None) -> list[dict[str, Any]]:
    """Results of several finished episodes (envs sharing one cache), in env order.

    The distinct keep counts not yet cached are evaluated in ONE ``evaluate_many`` call (default:
    :func:`sequential` on the first env's evaluator); identical candidates within the batch are
    evaluated once, the first env in order counting the evaluation and the others cache hits,
    exactly as if the episodes had finished one after the other.  ``eval_seconds`` of an
    evaluated candidate is the wall time of the whole call (what the search waited for).
    """
    if not envs:
        return []
    cache = envs[0].cache
    if any(env.cache is not cache for env in envs):
        raise ValueError("the envs of a batch must share one evaluation cache")
    todo: dict[tuple[int, ...], dict[str, float]] = {}
    for env in envs:
        key, policy = env.candidate()
        if key not in cache and key not in todo:
            todo[key] = policy
    found: dict[tuple[int, ...], EvalResult] = {}
    seconds = 0.0
    if todo:
        evaluate_many = evaluate_many or sequential(envs[0].evaluate)
        t0 = time.perf_counter()
        evs = list(evaluate_many(list(todo.values())))
        seconds = time.perf_counter() - t0
        if len(evs) != len(todo):
            raise RuntimeError(f"evaluate_many returned {len(evs)} results for {len(todo)} "
                               "policies")
        found = dict(zip(todo, evs, strict=True))
    return [env.finish(found.pop(env.candidate()[0], None), seconds) for env in envs]
