"""Baselines the DDPG policy must beat, run through the same env (wall, cache, reward).

* :func:`uniform_search`: one keep ratio for every group, the largest that meets the budget
  (bisection), evaluated once.  The hand-crafted policy AMC compares against.
* :func:`random_search`: uniform random actions in [-1, 1] through the same action wall, for the
  same number of episodes as the agent: what the agent's learning adds over blind sampling.
  In rounds of K (``batch=K``) the K candidates are evaluated by one ``evaluate_many`` call; the
  actions are drawn in the same order, so the records do not depend on K.
* :func:`greedy_search`: AIMET's greedy compression-ratio selection: every group's sensitivity
  measured alone, then one accuracy threshold for all groups, bisected to meet the budget.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from .agent import SearchCallback, SearchResult
from .budget import Budget, budget_use, check_feasible, largest_fitting
from .env import BatchEvaluator, PruningEnv, finish_batch, sequential
from .space import LayerSpace

__all__ = ["greedy_grid", "greedy_search", "random_search", "uniform_ratio",
           "uniform_search"]


def _fits(budget: Budget, space: LayerSpace, ratios: list[float]) -> bool:
    """Whether the rounded policy of ``ratios`` meets the budget (as the wall prices it)."""
    return budget.fits(budget_use(budget, space, ratios) * budget.original)


def uniform_ratio(space: LayerSpace, budget: Budget, *, iterations: int = 40) -> float:
    """The largest single keep ratio in ``[lbound, rbound]`` whose rounded policy meets the
    budget (exactly or under: rounding makes the cost a step function of the ratio).

    Raises:
        ValueError: the budget is infeasible even at ``lbound``.
    """
    check_feasible(budget, space)
    n = space.num_groups
    return float(largest_fitting(space.lbound, space.rbound,
                                 lambda r: _fits(budget, space, [r] * n), iterations))


def _run(env: PruningEnv, ratios: list[float]) -> dict[str, Any]:
    """One episode that asks for ``ratios`` (mapped back to the env's [-1, 1] actions), through
    the wall and the cache; its result."""
    space = env.space
    width = space.rbound - space.lbound
    env.reset()
    info: dict[str, Any] = {}
    for r in ratios:
        a = 2.0 * (r - space.lbound) / width - 1.0 if width > 0 else 1.0
        _, _, done, _, info = env.step(np.array([a], dtype=np.float32))
        if done:
            break
    return info["result"]


def uniform_search(env: PruningEnv) -> SearchResult:
    """Evaluate the uniform policy of :func:`uniform_ratio` once (through the env, so the wall
    and the cache apply; the wall never changes it, since it already fits)."""
    space = env.space
    r = uniform_ratio(space, env.budget)
    callback = SearchCallback(1)
    callback.record(_run(env, [r] * space.num_groups))
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


def greedy_grid(space: LayerSpace, candidates: int = 8) -> list[float]:
    """The keep ratios each group is probed at: ``candidates`` steps from ``lbound`` up to (not
    including) ``rbound``, where the group is whole."""
    width = space.rbound - space.lbound
    return [round(space.lbound + width * i / candidates, 6) for i in range(candidates)]


def greedy_search(
    env: PruningEnv,
    *,
    candidates: int = 8,
    progress: bool = False,
    on_probe: Callable[[dict[str, Any]], None] | None = None,
    batch: int = 1,
    evaluate_many: BatchEvaluator | None = None,
) -> SearchResult:
    """AIMET's greedy per-layer compression-ratio selection, with this env's evaluator.

    1. Sensitivity: each group alone at each ratio of :func:`greedy_grid`, every other group
       whole, scored by ``env.evaluate`` (not through the wall: one group alone never meets
       the budget, so these probes are not candidates).
    2. Selection: for an accuracy threshold ``t``, each group takes the lowest probed ratio
       whose score alone is >= ``t`` (``rbound`` if none); the cost only falls as ``t`` falls,
       so the highest ``t`` whose policy fits the budget is found by bisection over the probed
       scores. At the lowest score every group sits at ``lbound``, which the env's feasibility
       check guarantees to fit.
    3. That policy is evaluated once through the env (the wall leaves it alone, since it fits).

    It assumes that the groups' losses add up, which the probes never test: the price of its
    ``num_groups x candidates`` evaluations being independent of each other (and of the
    budget: one sensitivity table serves every budget). ``on_probe`` receives each probe's
    ``{"group", "ratio", "score"}``; the result's ``best["sensitivity"]`` holds the table.
    """
    if candidates < 1:
        raise ValueError(f"candidates must be >= 1, got {candidates}")
    space, budget = env.space, env.budget
    n = space.num_groups
    grid = greedy_grid(space, candidates)
    probe_keys: list[tuple[int, ...]] = []
    todo: dict[tuple[int, ...], dict[str, float]] = {}
    for i in range(n):
        for r in grid:
            ratios = [space.rbound] * n
            ratios[i] = r
            key = space.keep_counts(ratios)
            probe_keys.append(key)
            todo.setdefault(key, space.policy(ratios))
    evaluate_many = evaluate_many or sequential(env.evaluate)
    keys = list(todo)
    scores: dict[tuple[int, ...], float] = {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(keys), unit="probe", desc="sensitivity")
    try:
        for start in range(0, len(keys), batch):
            chunk = keys[start:start + batch]
            for key, ev in zip(chunk, evaluate_many([todo[k] for k in chunk]), strict=True):
                scores[key] = float(ev.score)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    sens = np.array([scores[k] for k in probe_keys]).reshape(n, len(grid))
    if on_probe is not None:
        for i in range(n):
            for j, r in enumerate(grid):
                on_probe({"group": space.group_ids[i], "ratio": r, "score": float(sens[i, j])})

    def ratios_at(t: float) -> list[float]:
        out = []
        for i in range(n):
            ok = [grid[j] for j in range(len(grid)) if sens[i, j] >= t]
            out.append(min(ok) if ok else float(space.rbound))
        return out

    thresholds = sorted(set(sens.ravel().tolist()))  # ascending; the first always fits
    lo, hi = 0, len(thresholds)  # fits(thresholds[lo]); thresholds[hi] (if any) does not
    if _fits(budget, space, [float(space.rbound)] * n):
        chosen = [float(space.rbound)] * n
    else:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _fits(budget, space, ratios_at(thresholds[mid])):
                lo = mid
            else:
                hi = mid
        chosen = ratios_at(thresholds[lo])
    callback = SearchCallback(1)
    result = _run(env, chosen)
    result["sensitivity"] = {gid: {f"{r:g}": float(sens[i, j]) for j, r in enumerate(grid)}
                             for i, gid in enumerate(space.group_ids)}
    result["probes"] = len(keys)  # distinct single-group policies evaluated
    callback.record(result)
    res = callback.result("greedy", env)
    return dataclasses.replace(res, evaluations=res.evaluations + len(keys))
