"""Baselines the DDPG policy must beat, run through the same env (wall, cache, reward).

* :func:`uniform_search`: one keep ratio for every group, the largest that meets the budget
  (bisection), evaluated once.  The hand-crafted policy AMC compares against.
* :func:`random_search`: uniform random actions in [-1, 1] through the same action wall, for the
  same number of episodes as the agent: what the agent's learning adds over blind sampling.
  In rounds of K (``batch=K``) the K candidates are evaluated by one ``evaluate_many`` call; the
  actions are drawn in the same order, so the records do not depend on K.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from .agent import SearchCallback, SearchResult
from .budget import Budget, budget_use, check_feasible
from .env import BatchEvaluator, PruningEnv, finish_batch
from .space import LayerSpace

__all__ = ["random_search", "uniform_ratio", "uniform_search"]


def uniform_ratio(space: LayerSpace, budget: Budget, *, iterations: int = 40) -> float:
    """The largest single keep ratio in ``[lbound, rbound]`` whose rounded policy meets the
    budget (exactly or under: rounding makes the cost a step function of the ratio).

    Raises:
        ValueError: the budget is infeasible even at ``lbound``.
    """
    check_feasible(budget, space)
    n = space.num_groups

    def fits(r: float) -> bool:
        return budget.fits(budget_use(budget, space, [r] * n) * budget.original)

    if fits(space.rbound):
        return float(space.rbound)
    lo, hi = space.lbound, space.rbound  # fits(lo), not fits(hi)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return float(lo)


def _run(env: PruningEnv, actions: list[float]) -> dict[str, Any]:
    env.reset()
    info: dict[str, Any] = {}
    for a in actions:
        _, _, done, _, info = env.step(np.array([a], dtype=np.float32))
        if done:
            break
    return info["result"]


def uniform_search(env: PruningEnv) -> SearchResult:
    """Evaluate the uniform policy of :func:`uniform_ratio` once (through the env, so the wall
    and the cache apply; the wall never changes it, since it already fits)."""
    space = env.space
    r = uniform_ratio(space, env.budget)
    width = space.rbound - space.lbound
    action = 2.0 * (r - space.lbound) / width - 1.0 if width > 0 else 1.0
    callback = SearchCallback(1)
    callback.record(_run(env, [action] * space.num_groups))
    return callback.result("uniform", env)


def random_search(
    env: PruningEnv,
    episodes: int,
    *,
    seed: int = 0,
    progress: bool = False,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    batch: int = 1,
    evaluate_many: BatchEvaluator | None = None,
) -> SearchResult:
    """``episodes`` episodes of uniform random actions through the wall; the best one wins.
    Records are marked ``phase="warmup"`` (uniform random actions, as the agent's warm-up).

    ``batch=K``: rounds of K episodes (the last one shorter if K does not divide ``episodes``)
    whose candidates go to ``evaluate_many`` together (default: in this process, in order)."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    rng = np.random.default_rng(seed)
    envs = [env] + [env.clone() for _ in range(min(batch, episodes) - 1)]
    callback = SearchCallback(episodes, warmup=episodes, progress=progress, on_record=on_record,
                              batch=batch)
    callback.start()
    try:
        for start in range(0, episodes, batch):
            group = envs[:min(batch, episodes - start)]
            for e in group:
                e.reset()
                for a in rng.uniform(-1.0, 1.0, env.space.num_groups).tolist():
                    e.choose(a)
            for result in finish_batch(group, evaluate_many):
                callback.record(result)
    finally:
        callback.close()
    totals = SimpleNamespace(evaluations=sum(e.evaluations for e in envs),
                             cache_hits=sum(e.cache_hits for e in envs))
    return callback.result("random", totals)
