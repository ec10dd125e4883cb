"""From a policy to a pure-data prune plan: which channels of every group survive.

A policy maps group ids to a keep ratio or to explicit kept indices (positions in the group's
canonical order). Budget code calls this many times; it never touches weights beyond the cached
importance scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .analyze import Analysis, ChannelGroup
from .errors import PolicyError

__all__ = ["PrunePlan", "make_plan", "keep_count", "Policy", "DEFAULT_ROUND_TO"]

# Kept channel counts are rounded up to a multiple of this by default: on ONNX Runtime CPU
# (AVX2), multiples of 8 gave the best speed per MAC over 13 zoo configurations, and counts
# off by one cost ResNet-50 33-36% (benchmarks/RESULTS.md, bench_latency_rounding.py).
DEFAULT_ROUND_TO = 8

Policy = Mapping[str, float | Sequence[int]]


@dataclass(frozen=True, eq=False)
class PrunePlan:
    """Kept positions per group (in canonical order) and the keep mask over channel classes."""

    keep: np.ndarray
    kept: dict[str, np.ndarray]

    def ratio(self, group: ChannelGroup) -> float:
        return len(self.kept.get(group.id, group.classes)) / group.size


def keep_count(size: int, ratio: float, round_to: int = 1, blocks: int = 1) -> int:
    """ceil(ratio x size), rounded up to a multiple of ``round_to``, at least one per block.

    With ``blocks`` equal parts (grouped convs), the count is a multiple of ``blocks``, and the
    rounding is applied to the total where a multiple of both exists below ``size``.
    """
    k = max(1, math.ceil(ratio * size - 1e-9))
    step = blocks * round_to // math.gcd(blocks, round_to) if round_to > 1 else blocks
    if step > 1:
        rounded = -(-k // step) * step
        if rounded <= size:
            return rounded
        step = blocks
        k = -(-k // step) * step
    return min(k, size)


def _select(group: ChannelGroup, score: np.ndarray, k: int) -> np.ndarray:
    """Top-k positions by score (stable: ties keep the lower index), equal per block."""
    s = score[group.classes]
    if group.blocks <= 1:
        order = np.argsort(-s, kind="stable")[:k]
        return np.sort(order)
    # One stable sort by (block, -score) instead of a loop over blocks (ResNeXt has 32 each).
    order = np.lexsort((-s, group.block_of))
    block = group.block_of[order]
    rank = np.arange(order.size) - np.searchsorted(block, block)
    return np.sort(order[rank < k // group.blocks])


def make_plan(
    analysis: Analysis,
    policy: Policy,
    score: np.ndarray,
    *,
    round_to: int = DEFAULT_ROUND_TO,
) -> PrunePlan:
    """Validate ``policy`` and turn it into a plan. Groups not named keep every channel.

    Raises PolicyError for unknown or frozen groups, ratios outside (0, 1] and bad index sets.
    """
    keep = analysis.keep_all()
    kept: dict[str, np.ndarray] = {}
    for gid, spec in policy.items():
        group = analysis.group_by_id.get(gid)
        if group is None:
            raise PolicyError(f"policy names unknown group '{gid}'")
        if isinstance(spec, bool) or not isinstance(spec, int | float | Sequence | np.ndarray):
            raise PolicyError(f"group '{gid}': expected a keep ratio or a list of indices")
        if isinstance(spec, int | float):
            ratio = float(spec)
            if not (0.0 < ratio <= 1.0) or math.isnan(ratio):
                raise PolicyError(f"group '{gid}': keep ratio {spec} is outside (0, 1]")
            if not group.prunable:
                if ratio < 1.0:
                    raise PolicyError(f"group '{gid}' is frozen ({group.frozen})")
                continue
            k = keep_count(group.size, ratio, round_to, group.blocks)
            if k >= group.size:
                continue
            positions = _select(group, score, k)
        else:
            positions = _indices(group, spec)
            if positions.size == group.size:
                continue
            if not group.prunable:
                raise PolicyError(f"group '{gid}' is frozen ({group.frozen})")
        kept[gid] = positions
        mask = np.zeros(group.size, dtype=bool)
        mask[positions] = True
        keep[group.classes[~mask]] = False
    return PrunePlan(keep, kept)


def _indices(group: ChannelGroup, spec: Sequence[int]) -> np.ndarray:
    try:
        idx = np.asarray(list(spec), dtype=np.int64)
    except (TypeError, ValueError):
        raise PolicyError(f"group '{group.id}': indices must be integers") from None
    if idx.ndim != 1 or idx.size == 0:
        raise PolicyError(f"group '{group.id}': needs at least one kept index")
    if idx.min() < 0 or idx.max() >= group.size:
        raise PolicyError(f"group '{group.id}': indices must be in [0, {group.size})")
    if np.unique(idx).size != idx.size:
        raise PolicyError(f"group '{group.id}': duplicate indices")
    idx = np.sort(idx)
    if group.blocks > 1:
        counts = np.bincount(group.block_of[idx], minlength=group.blocks)
        if counts.min() != counts.max():
            raise PolicyError(
                f"group '{group.id}': grouped conv needs equal kept counts in each of "
                f"{group.blocks} blocks")
    return idx
