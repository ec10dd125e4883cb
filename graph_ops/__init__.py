"""Pure ONNX graph surgery for structured channel pruning.

Depends only on onnx, numpy and onnx-graphsurgeon: no ONNX Runtime, no RL.

Typical use::

    from graph_ops import analyze, importance, make_plan, apply
    a = analyze("model.onnx")
    plan = make_plan(a, {g.id: 0.5 for g in a.prunable_groups}, importance(a))
    pruned = apply(a, plan)
"""

from .analyze import Analysis, ChannelGroup, analyze
from .apply import apply
from .count import Counts, count, group_macs, prunable_mac_share
from .errors import GraphOpsError, ModelLoadError, PolicyError
from .importance import importance
from .load import load_model, save_model
from .plan import DEFAULT_ROUND_TO, Policy, PrunePlan, keep_count, make_plan
from .rules import CHANNEL_PRESERVING, DEFAULT_RULES, RuleRegistry

__all__ = [
    "Analysis", "ChannelGroup", "analyze", "apply", "Counts", "count", "group_macs",
    "prunable_mac_share", "GraphOpsError", "ModelLoadError", "PolicyError", "importance",
    "load_model", "save_model", "DEFAULT_ROUND_TO", "Policy", "PrunePlan", "keep_count", "make_plan",
    "CHANNEL_PRESERVING", "DEFAULT_RULES", "RuleRegistry", "uniform_policy",
]


def uniform_policy(analysis: Analysis, ratio: float) -> dict[str, float]:
    """The same keep ratio for every prunable group."""
    return {g.id: ratio for g in analysis.prunable_groups}
