"""AMC search on ONNX graphs: layer embedding, action wall, rewards, Gymnasium env, SB3 DDPG.

The package namespace holds the pure parts only (``space``, ``budget``, ``rewards``: numpy and
graph_ops), so budget checks and embeddings work without the ``search`` extra.  The env
(gymnasium) and the agent and baselines (Stable-Baselines3, torch) are imported from their
modules::

    from graph_ops import analyze
    from onnx_amc.search import build_space, macs_budget
    from onnx_amc.search.env import PruningEnv, plan_evaluator
    from onnx_amc.search.agent import SearchConfig, run_ddpg

    space = build_space(analyze(model, input_shapes=shapes))
    env = PruningEnv(space, macs_budget(space, 0.5), plan_evaluator(space, evaluator))
    result = run_ddpg(env, SearchConfig(episodes=300))
"""

from .budget import (
    Budget,
    budget_use,
    callable_budget,
    check_feasible,
    clamp_to_budget,
    fill_budget,
    macs_budget,
    make_budget,
    params_budget,
)
from .rewards import REWARDS, RewardInput, get_reward, rank_key
from .space import FEATURES, LayerSpace, build_space

__all__ = [
    "FEATURES",
    "REWARDS",
    "Budget",
    "LayerSpace",
    "RewardInput",
    "budget_use",
    "build_space",
    "callable_budget",
    "check_feasible",
    "clamp_to_budget",
    "fill_budget",
    "get_reward",
    "macs_budget",
    "make_budget",
    "params_budget",
    "rank_key",
]
